"""Find and build the services' handler classes (the user-owned subclasses of the
generated bases), refusing clearly when one is missing, stale or incomplete.

Every problem of every requested service is found before any is reported, and all of
them are reported at once, one line each: fixing a project should not take one run per
service."""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from saga_registry.engine.errors import ConfigError
from saga_registry.engine.service import ServiceBase
from saga_registry.registry.model import Registry, snake_case
from saga_registry.registry.names import unknown
from saga_registry.stubs import is_stub


def event_types(package: str) -> Mapping[str, Any]:
    """The generated `EVENT_TYPES` of `package.events`."""
    module = _import(f"{package}.events", "run `saga codegen` first")
    types: Mapping[str, Any] = module.EVENT_TYPES
    return types


def load_services(
    registry: Registry,
    names: Sequence[str],
    package: str,
    options: Mapping[str, str] | None = None,
    *,
    allow_stubs: bool = False,
) -> list[ServiceBase]:
    """An instance of each service of `names`, from its class in `package.<module>`,
    given `options` through `configure`.

    Raises one `ConfigError` listing every problem found, one line each: an unknown
    service, a missing or stale class, reactions the class lacks, reactions still the
    generated stub (unless `allow_stubs`), `options` keys no service of the registry
    declares, and a class that cannot be built or configured."""
    options = dict(options or {})
    known = [s.name for s in registry.services]
    problems: list[str] = []
    classes: dict[str, type[Any]] = {}
    for name in names:
        if name not in known:
            problems.append(unknown("service", name, known))
            continue
        module = f"{package}.{registry.service(name).module}"
        try:
            cls = service_class(registry, name, package)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        classes[name] = cls
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            problems.append(f"handler {name} in {module} lacks reaction(s): {', '.join(missing)}")
        elif not allow_stubs and (stubs := unwritten_reactions(cls)):
            problems.append(
                f"handler {name} in {module} has reaction(s) still the generated stub: "
                f"{', '.join(stubs)}; write them, or run with --allow-stubs"
            )
    if options:
        problems += unknown_options(options, declared_options(registry, package, classes))
    if problems:
        raise ConfigError("\n".join(problems))
    instances: list[ServiceBase] = []
    for name, cls in classes.items():
        try:
            service = cls()
            configure = getattr(service, "configure", None)
            if configure is not None:
                configure(dict(options))
        except ConfigError as exc:
            problems.append(str(exc))
        except Exception as exc:  # user code: report it on one line
            problems.append(f"handler {name} could not be created: {type(exc).__name__}: {exc}")
        else:
            instances.append(service)
    if problems:
        raise ConfigError("\n".join(problems))
    return instances


def load_service(
    registry: Registry,
    name: str,
    package: str,
    options: Mapping[str, str] | None = None,
    *,
    allow_stubs: bool = False,
) -> ServiceBase:
    """The instance of one service (see `load_services`, whose checks it makes)."""
    (service,) = load_services(registry, [name], package, options, allow_stubs=allow_stubs)
    return service


def service_class(registry: Registry, name: str, package: str) -> type[Any]:
    """Service `name`'s class in `package.<module>`; a `ConfigError` if it is missing or
    was generated from another version of the registry."""
    spec = registry.service(name)
    module_name = f"{package}.{spec.module}"
    module = _import(module_name, "run `saga codegen` to create it")
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"missing handler: {module_name} defines no class {name}")
    expected = {r.event: r.emits for r in spec.reactions}
    if dict(getattr(cls, "reactions", {})) != expected:
        raise ConfigError(
            f"handler {name} was generated from another registry version: run `saga codegen`"
        )
    return cls


def unwritten_reactions(cls: type[Any]) -> list[str]:
    """The reaction methods of `cls` whose whole body is still the generated stub: a
    `raise NotImplementedError(...)`, after a docstring or not. A method whose source
    cannot be read (built at run time, no source file) counts as written."""
    names: Mapping[str, str] = getattr(cls, "handler_names", {})
    return sorted(m for m in set(names.values()) if _is_stub(getattr(cls, m, None)))


def _is_stub(method: Any) -> bool:
    if method is None or getattr(method, "__isabstractmethod__", False):
        return False
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(method)))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, ValueError):
        return False
    return bool(tree.body) and is_stub(tree.body[0])


def declared_options(
    registry: Registry, package: str, loaded: Mapping[str, type[Any]]
) -> dict[str, str]:
    """Every `--set` key the registry's services declare (`ServiceBase.options`), with
    its description: those of `loaded` classes, and of the registry's other services
    whose class can be imported (a process runs a few services, but is usually given
    the settings of all of them)."""
    declared: dict[str, str] = {}
    for spec in registry.services:
        cls = loaded.get(spec.name)
        if cls is None:
            try:
                cls = service_class(registry, spec.name, package)
            except ConfigError:
                continue  # not runnable here: its own run reports it
        declared.update(getattr(cls, "options", {}))
    return declared


def unknown_options(options: Iterable[str], declared: Mapping[str, str]) -> list[str]:
    """One line for each key of `options` not in `declared`, with the closest declared
    key when one is close."""
    lines = []
    for key in options:
        if key in declared:
            continue
        close = difflib.get_close_matches(key, list(declared), n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif declared:
            hint = f"the services take {', '.join(sorted(declared))}"
        else:
            hint = "the services take no settings"
        lines.append(f"--set {key}: no service declares this key; {hint}")
    return lines


def _import(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(f"{exc.name}.")):
            raise ConfigError(f"missing handler module {module}: {hint}") from None
        raise ConfigError(f"cannot import {module}: {exc}") from None
    except Exception as exc:  # user code: report it on one line
        raise ConfigError(f"cannot import {module}: {type(exc).__name__}: {exc}") from None


__all__ = [
    "declared_options",
    "event_types",
    "load_service",
    "load_services",
    "service_class",
    "snake_case",
    "unknown_options",
    "unwritten_reactions",
]
