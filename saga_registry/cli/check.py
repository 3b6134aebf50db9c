"""`saga check`: explore every run of one saga, bounded, and prove the checker's rules
over all of them or print a counterexample (docs/check.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from saga_registry.checker import counterexample
from saga_registry.checker.explore import DEFAULT_MAX_EVENTS, Exploration, explore
from saga_registry.checker.rules import Verdict, check_all, dead_deadlines
from saga_registry.cli.options import (
    fail,
    registry_option,
    registry_or_fail,
    render_svg,
    write_text,
)


@click.command()
@registry_option
@click.option(
    "--max-events",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_EVENTS,
    show_default=True,
    help="Explore runs up to this many events on the saga's log.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--dot",
    "dot_path",
    type=click.Path(dir_okay=False),
    help="Draw the first counterexample as DOT.",
)
@click.option(
    "--svg",
    "svg_path",
    type=click.Path(dir_okay=False),
    help="Draw the first counterexample as SVG (Graphviz dot).",
)
def check(
    registry: str, max_events: int, as_json: bool, dot_path: str | None, svg_path: str | None
) -> None:
    """Explore every run the engine can produce for one saga of the registry (up to
    --max-events events) and prove each rule over all of them, or print the shortest run
    that breaks it. Exit status 1 when a rule is violated."""
    if svg_path and shutil.which("dot") is None:
        fail(f"--svg {svg_path}: Graphviz 'dot' is not installed")
    reg = registry_or_fail(registry)
    found = explore(reg, max_events)
    verdicts = check_all(found)
    if as_json:
        click.echo(json.dumps(_doc(registry, found, verdicts), indent=2))
    else:
        for line in _report(registry, found, verdicts):
            click.echo(line)
    broken = next((v.counterexample for v in verdicts if v.counterexample), None)
    if dot_path or svg_path:
        if broken is None:
            click.echo("note: no counterexample to draw; nothing written", err=True)
        else:
            source = counterexample.dot(reg, broken)
            if dot_path:
                write_text(Path(dot_path), source)
            if svg_path:
                render_svg(source, Path(svg_path))
    if any(v.status == "violated" for v in verdicts):
        raise SystemExit(1)


def _explored(found: Exploration) -> str:
    runs = found.runs()
    counted = (
        "endless runs (they loop)" if runs is None else f"{runs} run{'s' if runs != 1 else ''}"
    )
    if found.too_many:
        bound = (
            f"bound of {found.max_configs} configurations HIT: some runs were not explored "
            "to their end"
        )
    elif found.bound_hit:
        bound = f"bound of {found.max_events} events HIT: runs longer were not explored"
    else:
        bound = f"every run explored (bound {found.max_events} events not reached)"
    return (
        f"explored {len(found.depth)} configurations, {found.transitions} moves, "
        f"{counted} in {found.seconds * 1000:.1f} ms; {bound}"
    )


def _report(path: str, found: Exploration, verdicts: list[Verdict]) -> list[str]:
    reg = found.world.registry
    out = [f"{path}: saga '{reg.name}': {_explored(found)}"]
    width = max(len(v.rule) for v in verdicts)
    for v in verdicts:
        out.append(f"{v.rule.ljust(width)}  {v.status}: {v.detail}")
    bounded = " within the bound" if found.bound_hit else ""
    out.extend(f"note: {line}{bounded}" for line in dead_deadlines(found))
    for v in verdicts:
        if v.counterexample is not None:
            out.append("")
            out.extend(counterexample.lines(v.counterexample))
    return out


def _doc(path: str, found: Exploration, verdicts: list[Verdict]) -> dict[str, Any]:
    return {
        "registry": path,
        "saga": found.world.registry.name,
        "explored": {
            "configurations": len(found.depth),
            "moves": found.transitions,
            "runs": found.runs(),
            "max_events": found.max_events,
            "bound_hit": found.bound_hit,
            "max_configurations": found.max_configs,
            "configurations_bound_hit": found.too_many,
            "seconds": round(found.seconds, 6),
        },
        "ok": not any(v.status == "violated" for v in verdicts),
        "notes": dead_deadlines(found),
        "rules": [
            {
                "rule": v.rule,
                "status": v.status,
                "detail": v.detail,
                "counterexample": (
                    None if v.counterexample is None else counterexample.as_json(v.counterexample)
                ),
            }
            for v in verdicts
        ],
    }
