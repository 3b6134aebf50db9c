"""Which reactions an owned service module has not written, read from its source with
`ast` (codegen never imports the project's code: it may not even import after a
registry change).

Only what the class body itself defines is seen: a reaction inherited from a mixin
counts as missing here (the runtime's start-time check sees it)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from saga_registry.codegen.python_code import reaction_signature
from saga_registry.registry.model import Registry, snake_case
from saga_registry.stubs import is_stub


class OwnedModuleUnreadable(Exception):
    """The owned module cannot be checked (unreadable, not Python, or lacks the class);
    the message says which, in one line."""


def unwritten_reactions(
    path: Path, class_name: str, method_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The methods of `method_names` that class `class_name` in `path` does not define
    (missing), and those it defines whose whole body, apart from a docstring, is
    `raise NotImplementedError` or `raise NotImplementedError(...)` (stubs); each in
    the order of `method_names`. Raises `OwnedModuleUnreadable`."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except OSError as exc:
        raise OwnedModuleUnreadable(f"cannot read it: {exc.strerror or exc}") from None
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise OwnedModuleUnreadable(f"not valid Python{where}; reactions not checked") from None
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if cls is None:
        raise OwnedModuleUnreadable(f"defines no class {class_name}; reactions not checked")
    defined: dict[str, ast.stmt] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            defined[node.name] = node
        elif isinstance(node, ast.Assign):  # `on_x = on_y`: an alias is written code
            for target in node.targets:
                if isinstance(target, ast.Name):
                    defined[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined[node.target.id] = node
    missing = [m for m in method_names if m not in defined]
    stubs = [m for m in method_names if m in defined and is_stub(defined[m])]
    return missing, stubs


def notes(registry: Registry, root: Path, package: str) -> list[str]:
    """For each owned service module under `root/package`: a note naming the reactions
    its base declares that it lacks (with the signatures to add), one naming those still
    the generated stub, or one saying why it cannot be checked. Modules that do not
    exist are left to `check`."""
    out = []
    for service in registry.services:
        rel = f"{package}/{service.module}.py"
        path = root / rel
        if not path.is_file():
            continue
        by_method = {f"on_{snake_case(r.event)}": r for r in service.reactions}
        try:
            missing, stubs = unwritten_reactions(path, service.name, list(by_method))
        except OwnedModuleUnreadable as exc:
            out.append(f"{rel}: {exc}")
            continue
        if missing:
            n = len(missing)
            signatures = "".join(f"\n    {reaction_signature(by_method[m])}: ..." for m in missing)
            out.append(
                f"{rel}: {service.name} lacks {n} reaction{'s' if n != 1 else ''}; add:{signatures}"
            )
        if stubs:
            n = len(stubs)
            out.append(
                f"{rel}: {service.name} has {n} reaction{'s' if n != 1 else ''} not written yet"
                f" (still raising NotImplementedError): {', '.join(stubs)}"
            )
    return out + orphans(registry, root, package)


def orphans(registry: Registry, root: Path, package: str) -> list[str]:
    """A note for each module of `root/package` that subclasses the base of a service the
    registry no longer has (codegen removed that base, so the module cannot import)."""
    current = {s.module for s in registry.services}
    out = []
    for path in sorted((root / package).glob("*.py")):
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue  # not ours to judge here
        gone = sorted(
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            and node.module is not None
            and node.module.startswith(f"{package}.base.")
            and node.module.removeprefix(f"{package}.base.") not in current
        )
        if gone:
            out.append(
                f"{package}/{path.name}: imports {gone[0]}, the base of a service no longer "
                "in the registry; delete the module if it was that service's"
            )
    return out
