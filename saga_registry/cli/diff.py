"""`saga diff OLD [NEW]`: every change between two registries, compatible or breaking, and
for whom. OLD and NEW are registry files or git revisions of the project's registry;
NEW defaults to the registry file as it is now. Also the summary `saga codegen` prints
when the registry changed since git's HEAD (`since_head`).

Exit statuses, like diff(1)'s: 0 compatible or identical, 1 a breaking change (unless
--allow-breaking), 2 the registries could not be compared (a file or revision that is
not there, a registry that is not valid, no git to read a revision with).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

from saga_registry.registry import CodegenError, Registry, load_registry
from saga_registry.registry.diff import AUDIENCES, Change, diff_registries, summary
from saga_registry.registry.errors import problem_line

UNCOMPARABLE = 2
"""The exit status when a registry cannot be read: 1 means a breaking change."""


class Unreadable(Exception):
    """A side of the comparison cannot be had; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class Side:
    """One side of the comparison: its name as printed, and its registry."""

    label: str
    registry: Registry


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8", check=False
        )
    except OSError as exc:  # no git, or a folder that vanished
        raise Unreadable(f"git cannot be run ({exc.strerror or exc})") from None


def _in_repo(registry: str) -> tuple[Path, str]:
    """The folder to run git in and `registry`'s path from its repository's root."""
    target = Path(os.path.abspath(registry))
    folder = target.parent if target.parent.is_dir() else Path.cwd()
    top = _git(["rev-parse", "--show-toplevel"], folder)
    if top.returncode != 0:
        raise Unreadable(f"{folder} is not in a git repository to read it as a revision")
    root = Path(os.path.realpath(top.stdout.strip()))
    real = Path(os.path.realpath(target))
    try:
        return folder, real.relative_to(root).as_posix()
    except ValueError:
        raise Unreadable(f"the registry {registry} is outside the git repository {root}") from None


def _at_revision(revision: str, registry: str) -> tuple[str, str]:
    """(label, text) of `registry` at git `revision`."""
    if revision.startswith("-"):  # never an option to git
        raise Unreadable(f"{revision!r} is neither a registry file nor a git revision")
    try:
        folder, path = _in_repo(registry)
    except Unreadable as exc:
        raise Unreadable(f"{revision!r} is not a registry file, and {exc}") from None
    if _git(["rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], folder).returncode:
        raise Unreadable(f"{revision!r} is neither a registry file nor a git revision")
    shown = _git(["show", f"{revision}:{path}"], folder)
    if shown.returncode != 0:
        raise Unreadable(f"{path} does not exist at revision {revision}")
    return f"{revision}:{path}", shown.stdout


def _load(label: str, text: str | None) -> Registry:
    try:
        return load_registry(label, text)
    except CodegenError as exc:
        raise Unreadable(problem_line(label, exc)) from None


def side(argument: str | None, registry: str) -> Side:
    """The registry `argument` names: a file if one is there, else a git revision of
    `registry`; None: the file `registry`. Raises `Unreadable`."""
    if argument is None:
        return Side(registry, _load(registry, None))
    if Path(argument).is_file():
        return Side(argument, _load(argument, None))
    label, text = _at_revision(argument, registry)
    return Side(label, _load(label, text))


def change_line(c: Change) -> str:
    """One change as one line: verdict, for whom, where, code, why (and the rollout)."""
    rollout = f" (deploy {c.rollout})" if c.rollout else ""
    verdict = "breaking" if c.breaking else "compatible"
    return f"{verdict}: {c.for_whom}: {c.where}: {c.code}: {c.why}{rollout}"


def report(old: Side, new: Side, changes: list[Change]) -> dict[str, object]:
    """The JSON document of `saga diff --json`."""
    broken = [c for c in changes if c.breaking]
    return {
        "old": old.label,
        "new": new.label,
        "changes": [c.to_json() for c in changes],
        "summary": {
            "changes": len(changes),
            "breaking": len(broken),
            "compatible": len(changes) - len(broken),
            "breaking_for": [a for a in AUDIENCES if any(c.for_whom == a for c in broken)],
            "text": summary(changes),
        },
    }


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(UNCOMPARABLE)


@click.command("diff")
@click.argument("old")
@click.argument("new", required=False)
@click.option(
    "--registry",
    default="registry/saga.yaml",
    envvar="SAGA_REGISTRY",
    show_default=True,
    help="The registry file; a revision means this file at that revision.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead.")
@click.option("--allow-breaking", is_flag=True, help="Exit 0 even when a change is breaking.")
def diff(old: str, new: str | None, registry: str, as_json: bool, allow_breaking: bool) -> None:
    """List every change from OLD to NEW, compatible or breaking, and for whom.

    OLD and NEW are registry files or git revisions (then the --registry file at that
    revision); NEW defaults to the --registry file as it is. `saga diff HEAD` shows what
    the uncommitted edits change. Exit status: 0 compatible or no changes, 1 a breaking
    change (unless --allow-breaking), 2 a registry that could not be read."""
    try:
        before, after = side(old, registry), side(new, registry)
    except Unreadable as exc:
        _fail(str(exc))
    changes = diff_registries(before.registry, after.registry)
    if as_json:
        click.echo(json.dumps(report(before, after, changes), indent=2, ensure_ascii=False))
    else:
        for c in changes:
            click.echo(change_line(c))
        click.echo(f"{before.label} -> {after.label}: {summary(changes)}")
    if any(c.breaking for c in changes) and not allow_breaking:
        sys.exit(1)


def since_head(registry: str) -> list[str]:
    """The lines `saga codegen` prints about the registry file's changes since git's HEAD:
    the summary and the breaking changes; none when the file is not in a git repository,
    not tracked, unchanged, or either side cannot be read (codegen never fails on it)."""
    try:
        label, text = _at_revision("HEAD", registry)
        current = Path(registry).read_text(encoding="utf-8")
        if text == current:
            return []
        changes = diff_registries(_load(label, text), _load(registry, current))
    except (Unreadable, OSError, UnicodeDecodeError):
        return []
    said = summary(changes) if changes else "no changes (texts or layout only)"
    lines = [f"registry since HEAD: {said} (details: saga diff HEAD)"]
    return lines + [f"  {change_line(c)}" for c in changes if c.breaking]
