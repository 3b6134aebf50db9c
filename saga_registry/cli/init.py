"""`saga init DIR`: a new saga project that works at once (registry, reactions, outcome
tests, diagrams, a README), from an example shipped with the engine."""

from __future__ import annotations

import json
import re
import shutil
import sys
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

import click

from saga_registry.registry import CodegenError, load_registry

EXAMPLES = ("blank", "checkout")
_DIST = "saga-registry"
_SKIP = {"__pycache__", ".mypy_cache", ".pytest_cache"}


def engine_requirement(extra: str = "") -> str:
    """How the new project depends on this engine: where it was installed from (a local
    folder or a VCS checkout, as pip recorded it), else its release on the index."""
    name = f"{_DIST}[{extra}]" if extra else _DIST
    # Several records of one distribution can be on sys.path (a source checkout's
    # *.egg-info beside the installed one, when run from that checkout): the one pip
    # installed is the one that says where it came from.
    found = list(metadata.distributions(name=_DIST))
    if not found:
        return name
    origins = [d.read_text("direct_url.json") for d in found]
    dist = found[0]
    origin = next((o for o in origins if o), None)
    if origin:
        info = json.loads(origin)
        url = info.get("url", "")
        vcs = info.get("vcs_info")
        if vcs and url:
            return f"{name} @ {vcs['vcs']}+{url}@{vcs['commit_id']}"
        if url.startswith("file://"):
            return f"{name} @ {url}"
    return f"{name}>={dist.version}"


def _copy_tree(source: Traversable, target: Path) -> None:
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.name in _SKIP or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            _copy_tree(item, target / item.name)
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / item.name).write_bytes(item.read_bytes())


def _project_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", folder.resolve().name).strip("-").lower()
    return name or "my-saga"


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--example",
    type=click.Choice(EXAMPLES),
    default="blank",
    show_default=True,
    help="blank: a small signup saga to make your own; checkout: the order checkout.",
)
def init(directory: Path, example: str) -> None:
    """Create a saga project in DIRECTORY (new or empty): a registry that validates, its
    reactions written, outcome tests, diagrams and a README with the commands."""
    if directory.exists() and any(directory.iterdir()):
        click.echo(f"error: {directory} is not empty: saga init only fills a new folder", err=True)
        sys.exit(1)
    scaffold = resources.files("saga_registry.scaffold")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _copy_tree(scaffold / example, directory)
        registry_path = directory / "registry" / "saga.yaml"
        reg = load_registry(registry_path)
        starter = next(s for s in reg.services if s.initiates)
        event = reg.event(starter.initiates[0])
        fill = {
            "name": _project_name(directory),
            "saga": reg.name,
            "title": reg.title or reg.name,
            "engine": engine_requirement(),
            "engine_testing": engine_requirement("testing"),
            "engine_otel": engine_requirement("otel"),
            "first_event": event.name,
            # A payload of the example's first event, for its README's `saga start` line.
            "first_data": (scaffold / "samples" / f"{example}.json").read_text("utf-8").strip(),
        }
        common = scaffold / "common"
        for template, target in (
            ("pyproject.toml.tmpl", "pyproject.toml"),
            ("README.md.tmpl", "README.md"),
        ):
            text = Template((common / template).read_text("utf-8")).substitute(fill)
            (directory / target).write_text(text, "utf-8")
        (directory / ".gitignore").write_bytes((common / "gitignore").read_bytes())
        from saga_registry.codegen import write  # the generator, only for this command

        report = write(reg, registry_path, directory, render=shutil.which("dot") is not None)
    except CodegenError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"error: cannot write under {directory}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"created {directory} ({example}): saga '{reg.name}', {len(reg.services)} services")
    if report.not_rendered:
        click.echo("note: Graphviz 'dot' is not installed: diagrams written as .dot only")
    click.echo(
        f"next: cd {directory} && python3 -m venv .venv && . .venv/bin/activate && "
        "pip install -e '.[dev]' && saga codegen --check && pytest && saga run"
    )
