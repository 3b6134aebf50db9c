"""The `saga` command line. Every user mistake ends as one line on stderr and an exit
status (1: the input is wrong or stale; 2: the command line is wrong), never a traceback."""

from __future__ import annotations

import importlib
import importlib.util
import keyword
import os
import sys
import time
from pathlib import Path

import click

from saga_registry.cli.check import check
from saga_registry.cli.compat import compat
from saga_registry.cli.databases import db_group
from saga_registry.cli.diff import diff, since_head
from saga_registry.cli.dlq import dlq
from saga_registry.cli.init import init
from saga_registry.cli.ops import sagas, trace
from saga_registry.cli.options import package_option
from saga_registry.cli.runtime import run
from saga_registry.cli.start import start
from saga_registry.cli.ui import ui
from saga_registry.registry import CodegenError, RegistryInvalid, load_registry
from saga_registry.registry.errors import RegistryNotFound, problem_line
from saga_registry.registry.model import Registry

DEFAULT_REGISTRY = "registry/saga.yaml"


def _fail(message: str, status: int = 1) -> None:
    click.echo(message, err=True)
    sys.exit(status)


def _load(path: str, given_by: str = "--registry PATH") -> Registry:
    """The registry at `path`, or the command ends naming its problems (`given_by`: how
    the command names the registry, for the hint when it is not there)."""
    try:
        return load_registry(path)
    except RegistryNotFound as exc:
        _fail(f"error: {problem_line(path, exc, given_by)}")
    except RegistryInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        n = len(exc.problems)
        _fail(f"{path}: {n} problem{'s' if n != 1 else ''}; the registry is not valid")
    except CodegenError as exc:
        _fail(f"error: {exc}")
    raise AssertionError("unreachable")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="saga-registry")
def main() -> None:
    """A declarative saga engine driven by a YAML event registry."""


@main.command()
@click.argument("path", default=DEFAULT_REGISTRY, envvar="SAGA_REGISTRY")
def validate(path: str) -> None:
    """Check the registry at PATH (default: registry/saga.yaml): its structure against the
    shipped JSON Schema, then its meaning. Prints every problem as path:line:col."""
    reg = _load(path, "the registry's PATH")
    kinds = {
        k: sum(1 for e in reg.events if e.kind == k) for k in ("domain", "failure", "compensation")
    }
    sm = reg.state_machine
    click.echo(
        f"{path}: ok: saga '{reg.name}' (key {reg.key}): {len(reg.events)} events "
        f"({kinds['domain']} domain, {kinds['failure']} failure, "
        f"{kinds['compensation']} compensation), {len(reg.services)} services, "
        f"{len(sm.states)} states ({len(sm.terminal_states)} terminal), "
        f"{len(sm.deadlines)} deadline{'s' if len(sm.deadlines) != 1 else ''}"
    )


@main.command()
@click.option(
    "--registry",
    "registry_path",
    default=DEFAULT_REGISTRY,
    envvar="SAGA_REGISTRY",
    show_default=True,
    help="The registry to generate from.",
)
@click.option(
    "--out",
    "out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The project root to write PACKAGE/, docs/diagrams/ and tests/ under.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 and name the stale files if anything is out of date "
    "(SVGs are skipped under --no-render or without dot).",
)
@click.option("--no-render", is_flag=True, help="Write the .dot sources but do not run dot.")
@package_option
@click.option(
    "--no-tests",
    is_flag=True,
    help="Do not write the outcome test scaffold tests/test_outcomes.py.",
)
def codegen(
    registry_path: str, out: Path, check_only: bool, no_render: bool, package: str, no_tests: bool
) -> None:
    """Generate typed events, service bases and diagrams; write the owned service modules
    and the outcome test scaffold once (never overwritten)."""
    # Imported here: the runtime's commands must not load the generator's renderers.
    from saga_registry.codegen import check, svg_check_skipped, write
    from saga_registry.codegen.owned import notes as owned_notes

    if not package.isidentifier() or keyword.iskeyword(package):
        _fail(f"--package {package!r}: not a Python identifier", 2)
    started = time.perf_counter()
    reg = _load(registry_path)
    try:
        if check_only:
            skipped = svg_check_skipped(render=not no_render)
            stale = check(
                reg,
                Path(registry_path),
                out,
                svgs=skipped is None,
                package=package,
                tests=not no_tests,
            )
            for line in stale:
                click.echo(f"stale: {line}", err=True)
            if skipped:
                click.echo(f"note: SVGs not checked ({skipped}); their .dot sources were", err=True)
            for note in owned_notes(reg, out, package):  # reported, never a failure
                click.echo(f"note: {note}")
            for line in since_head(registry_path):  # what the edits change, never a failure
                click.echo(line)
            if stale:
                _fail(f"{len(stale)} generated file(s) out of date: run `saga codegen`")
            click.echo("generated files are up to date")
            return
        report = write(
            reg,
            Path(registry_path),
            out,
            render=not no_render,
            package=package,
            tests=not no_tests,
        )
    except CodegenError as exc:
        _fail(f"error: {exc}")
    except OSError as exc:
        _fail(f"error: cannot write under {out}: {exc.strerror or exc}")
    for rel in report.created:
        click.echo(f"created {rel} (yours to edit; never overwritten)")
    for rel in report.written:
        click.echo(f"wrote   {rel}")
    for rel in report.removed:
        click.echo(f"removed {rel} (no longer generated)")
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.not_rendered:
        why = "--no-render" if no_render else "Graphviz 'dot' is not installed"
        click.echo(
            f"note: {len(report.not_rendered)} diagram(s) not rendered to SVG ({why})", err=True
        )
    elapsed = time.perf_counter() - started
    changed = len(report.created) + len(report.written) + len(report.removed)
    click.echo(
        f"codegen: {changed} file(s) changed, {len(report.unchanged)} unchanged in {elapsed:.2f}s"
    )
    for line in since_head(registry_path):  # what the edits change, never a failure
        click.echo(line)


main.add_command(check)
main.add_command(init)
main.add_command(run)
main.add_command(dlq)
main.add_command(diff)
main.add_command(compat)
main.add_command(db_group)
main.add_command(start)
main.add_command(sagas)
main.add_command(trace)
main.add_command(ui)


def _add_project_commands(package: str = "handlers") -> None:
    """Add the commands a project lists in `<package>.commands.COMMANDS` (the checkout
    project's `demo`, say); the engine itself knows no project."""
    sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(package)
        # Only the project's own folder counts: an installed copy of another project's
        # package (an editable install, say) must not lend it commands.
        folder = Path(spec.origin).parent if spec and spec.origin else None
        if folder is None or not (folder / "commands.py").is_file():
            return
        module = importlib.import_module(f"{package}.commands")
    except ModuleNotFoundError as exc:
        click.echo(f"warning: project commands unavailable: {exc}", err=True)
        return
    except Exception as exc:  # user code: one line, and the engine's commands still work
        click.echo(f"warning: project commands unavailable: {type(exc).__name__}: {exc}", err=True)
        return
    for command in getattr(module, "COMMANDS", ()):
        main.add_command(command)


_add_project_commands()

if __name__ == "__main__":
    main()
