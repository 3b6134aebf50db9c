"""`saga sagas` and `saga trace`: watching any registry's sagas. Both only read the
services' databases (and, for `trace`, the dead-letter topic), never creating or changing
anything (`saga_registry.engine.inspect`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import click

from saga_registry.cli.options import (
    bus_option,
    db_option,
    fail,
    kafka_security,
    registry_option,
    registry_or_fail,
    render_svg,
    stuck_for_option,
    write_text,
)
from saga_registry.engine import inspect
from saga_registry.engine.buses import KafkaOptions
from saga_registry.engine.dead_letters import read_dead_letters
from saga_registry.engine.errors import EngineError
from saga_registry.engine.listing import listing
from saga_registry.engine.trace import (
    PASSED,
    Letter,
    Trace,
    build_trace,
    letters_of,
    trace_doc,
)
from saga_registry.registry.model import Registry


def _notes(notes: list[str]) -> None:
    for line in notes:
        click.echo(f"note: {line}", err=True)


# ---------------------------------------------------------------------------- sagas


@click.command()
@click.option(
    "--state",
    "state_filter",
    metavar="S",
    help="Only sagas in this state of the registry, or of this status: in-flight, stuck, "
    "parked, ended.",
)
@stuck_for_option
@click.option("--outcome", type=click.Choice(["success", "failure"]), help="Only ended sagas.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_option
@db_option
def sagas(
    state_filter: str | None,
    stuck_for: float | None,
    outcome: str | None,
    limit: int,
    as_json: bool,
    registry: str,
    db: str,
) -> None:
    """List sagas with counts by status and state first: in-flight, stuck (a pending
    deadline is past due, or with --stuck-for, not updated for that long), ended (in a
    terminal state, with its outcome), most recently updated first.

    Every service keeps its own copy of each saga's state and applies the log at its own
    pace, so copies may briefly disagree: a saga is shown as its most advanced copy (a
    terminal state wins, then the latest update)."""
    reg = registry_or_fail(registry)
    sm = reg.state_machine
    names = {s.name for s in sm.states}
    if state_filter is not None and state_filter not in names | set(inspect.STATUSES):
        fail(
            f"--state {state_filter!r}: not a state of {registry} "
            f"({', '.join(s.name for s in sm.states)}) nor a status "
            f"({', '.join(inspect.STATUSES)})"
        )
    try:
        views, notes = asyncio.run(inspect.saga_views(reg, db))
    except EngineError as exc:
        fail(str(exc))
    _notes(notes)
    if len(notes) == len(reg.services):
        fail(f"no service database could be read under --db {db}")
    now = time.time()
    listed = listing(reg, views, state=state_filter, outcome=outcome, stuck_for=stuck_for, now=now)
    if as_json:
        click.echo(json.dumps(listed.doc(limit), indent=2))
        return
    by_status, by_state, by_outcome = listed.by_status, listed.by_state, listed.by_outcome
    rows = [(r.view, r.status, r.outcome) for r in listed.rows]
    shown = rows[:limit]
    ended = by_status.get("ended", 0)
    split = ", ".join(f"{n} {o}" for o, n in sorted(by_outcome.items()))
    click.echo(
        f"{len(rows)} saga(s): {by_status.get('in-flight', 0)} in-flight, "
        f"{by_status.get('stuck', 0)} stuck, {by_status.get('parked', 0)} parked, "
        f"{ended} ended" + (f" ({split})" if split else "")
    )
    if by_state:
        click.echo("by state: " + ", ".join(f"{s} {n}" for s, n in sorted(by_state.items())))
    if not shown:
        return
    width = min(max(4, *(len(_shown(v.saga_id)) for v, _, _ in shown)), 40)
    state_w = max(5, *(len(v.state) for v, _, _ in shown))
    click.echo(
        f"\n{'SAGA':<{width}}  {'STATE':<{state_w}}  {'STATUS':<9}  {'OUTCOME':<7}  "
        f"{'AGE':>8}  {'IDLE':>8}  {'DEADLINE':>12}  SEEN BY"
    )
    for v, st, out in shown:
        age = _secs(now - v.started_at) if v.started_at else "?"
        if v.due_at is None:
            deadline = "-"
        elif v.due_at < now:
            deadline = f"{_secs(now - v.due_at)} late"
        else:
            deadline = f"in {_secs(v.due_at - now)}"
        seen = v.seen_by + (f"; parked in {', '.join(v.parked_in)}" if v.parked_in else "")
        click.echo(
            f"{_shown(v.saga_id):<{width}}  {v.state:<{state_w}}  {st:<9}  {out or '-':<7}  "
            f"{age:>8}  {_secs(now - v.updated_at):>8}  {deadline:>12}  {seen}"
        )
    if len(shown) < len(rows):
        click.echo(f"(showing {len(shown)} of {len(rows)}; --limit to see more)", err=True)


def _shown(saga_id: str) -> str:
    # A line per saga: an id with a line break or other control characters is quoted.
    return saga_id if saga_id.isprintable() else repr(saga_id)


def _secs(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


# ---------------------------------------------------------------------------- trace


@click.command()
@click.argument("saga_id")
@click.option("--dot", "dot_path", type=click.Path(dir_okay=False), help="Write the path as DOT.")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False), help="Draw it as SVG (dot).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_option
@db_option
@bus_option
@kafka_security
def trace(
    saga_id: str,
    dot_path: str | None,
    svg_path: str | None,
    as_json: bool,
    registry: str,
    db: str,
    bus: str,
    kafka: KafkaOptions,
) -> None:
    """SAGA_ID's events in log order: who produced each, the saga's state before and
    after, and what each service did with it (reacted, applied, skipped and why,
    dead-lettered, or - for not seen yet); then events emitted but not taken in yet.

    Read from the services' databases, and from the dead-letter topic when --bus answers.
    --dot/--svg draw the path taken on the registry's state machine."""
    reg = registry_or_fail(registry)
    if svg_path and shutil.which("dot") is None:
        fail(f"--svg {svg_path}: Graphviz 'dot' is not installed")
    try:
        records, notes = asyncio.run(inspect.saga_records(reg, db, saga_id))
        letters, note = asyncio.run(_letters(reg, bus, kafka, saga_id))
    except EngineError as exc:
        fail(str(exc))
    _notes([*notes, *([note] if note else [])])
    if all(r.empty() for r in records.values()) and not letters:
        fail(f"no service has seen saga {saga_id!r}")
    t = build_trace(reg, saga_id, records, letters)
    services = [s.name for s in reg.services]
    if as_json:
        click.echo(json.dumps(trace_doc(reg, t), indent=2))
    else:
        _print_trace(reg, t, services)
    if dot_path or svg_path:
        from saga_registry.codegen.diagrams import saga_path  # graphviz: only when drawing

        timeline = [
            (
                r.event_type,
                r.producer,
                {s: str(a) for s, a in r.actions.items() if a != PASSED and a.what != "-"},
            )
            for r in t.rows
        ]
        source = saga_path(reg, t.saga_id, t.state, t.visited, t.taken, timeline)
        if dot_path:
            write_text(Path(dot_path), source)
        if svg_path:
            render_svg(source, Path(svg_path))


async def _letters(
    reg: Registry, url: str, kafka: KafkaOptions, saga_id: str
) -> tuple[list[Letter], str]:
    """The saga's dead letters, or none and why the topic could not be read."""
    deliveries, note = await read_dead_letters(reg, url, kafka)
    return letters_of(deliveries, saga_id, reg.events_topic.name), note


def _print_trace(reg: Registry, t: Trace, services: list[str]) -> None:
    outcome = reg.state_machine.state(t.state).outcome
    click.echo(
        f"saga {_shown(t.saga_id)}: {len(t.rows)} event(s), now {t.state}"
        + (f" ({outcome})" if outcome else "")
    )
    if not t.rows:
        return
    first = min((r.at for r in t.rows if r.at is not None), default=None)
    type_w = max(len(r.event_type) for r in t.rows)
    prod_w = max(len(r.producer) for r in t.rows)
    moves = [f"{r.before} -> {r.after}" + (f" ({r.note})" if r.note else "") for r in t.rows]
    move_w = max(map(len, moves))
    for r, move in zip(t.rows, moves, strict=True):
        where = f"{r.partition}/{r.offset}" if r.offset is not None else "?"
        since = f"+{(r.at - first) * 1000:.0f}ms" if r.at is not None and first else ""
        # A service passes the events outside its projection unread: only what was done
        # shows, and who passed a replayed copy meant for another service.
        acts = "; ".join(f"{s}: {r.actions[s]}" for s in services if r.actions[s] != PASSED)
        click.echo(
            f"{where:>8} {since:>9}  {r.event_type:<{type_w}}  by {r.producer:<{prod_w}}  "
            f"{move:<{move_w}}  | {acts}"
        )
    for p in t.pending:
        click.echo(
            f"pending: {p.event_type} {p.event_id} emitted by {p.service}, "
            f"{'published' if p.sent else 'still in its outbox'}, not taken in yet"
        )


__all__ = ["sagas", "trace"]
