"""`saga dlq list` and `saga dlq replay`: read the dead-letter topic, put letters back.

A replay publishes, for each chosen letter in its order, a copy on the events topic meant
for the one service whose letter it is (header `saga_replay_for`: the other services let
it pass) and naming the events of the same saga whose copies follow it (header
`saga_replay_then`, see `engine.parking`), then a marker on the dead-letter topic naming
the letter's place and the time (header `saga_replay_marker`). A later replay leaves
marked letters out unless `--again`; `list` shows each letter's last replay. Copies go
first: a replay cut short between the two leaves a letter unmarked (replayed again next
time, a copy its service drops by its id) rather than marked but never put back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import click

from saga_registry.cli.options import (
    bus_option,
    fail,
    kafka_security,
    registry_option,
    registry_or_fail,
)
from saga_registry.engine.bus import Bus, Delivery, Record
from saga_registry.engine.buses import KafkaOptions, bus_from_url
from saga_registry.engine.deadletter import (
    TRUNCATED,
    DeadLetter,
    is_marker,
    letters,
    marker_record,
    one_line,
    replay_record,
    replays,
)
from saga_registry.engine.errors import EngineError
from saga_registry.registry.names import did_you_mean


@click.group()
def dlq() -> None:
    """Inspect and replay the dead-letter topic."""


def _bus(bus: str, kafka: KafkaOptions) -> Bus:
    try:
        return bus_from_url(bus, kafka_options=kafka)
    except EngineError as exc:
        fail(str(exc))


async def _read(b: Bus, topic: str) -> list[Delivery]:
    async with b as live:
        return await live.read_all(topic)


def _read_or_fail(b: Bus, topic: str) -> list[Delivery]:
    try:
        return asyncio.run(_read(b, topic))
    except EngineError as exc:
        fail(str(exc))


def _stamp(at: float | None) -> str:
    """When a letter was last replayed: `no`, a UTC time, or `yes` (a marker without a
    readable time)."""
    if at is None:
        return "no"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at > 0 else "yes"


def _cell(text: str) -> str:
    """`text` fit for one tab-separated cell of one line."""
    return one_line(text).replace("\t", " ") if text else ""


@dlq.command("list")
@registry_option
@bus_option
@kafka_security
def dlq_list(registry: str, bus: str, kafka: KafkaOptions) -> None:
    """Show every dead-lettered record: where from, which service, why, and whether and
    when it was replayed."""
    reg = registry_or_fail(registry)
    dead_topic = reg.dead_letter_topic.name
    deliveries = _read_or_fail(_bus(bus, kafka), dead_topic)
    done = replays(deliveries)
    found = letters(deliveries)
    for d in found:
        at = done.get((d.partition, d.offset))
        again = f"\treplay-of={_cell(d.replay_of)}" if d.replay_of else ""
        click.echo(
            f"{d.partition}/{d.offset}\t{_cell(d.service)}\t{_cell(d.saga_id)}"
            f"\t{_cell(d.event_type) or '?'}\t{_cell(d.event_id) or '?'}\tattempts={d.attempts}"
            f"\treplayed={_stamp(at)}{again}"
            f"\t{_cell(d.error_type)}: {_cell(d.error)}"
        )
    replayed = sum(1 for d in found if (d.partition, d.offset) in done)
    click.echo(
        f"{len(found)} dead-lettered record(s) in {dead_topic}, {replayed} replayed", err=True
    )


@dlq.command("replay")
@registry_option
@bus_option
@click.option("--service", help="Only records dead-lettered by this service.")
@click.option("--saga", "saga_id", help="Only records of this saga.")
@click.option("--again", is_flag=True, help="Replay chosen letters that were replayed before, too.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed.")
@kafka_security
def dlq_replay(
    registry: str,
    bus: str,
    service: str | None,
    saga_id: str | None,
    again: bool,
    dry_run: bool,
    kafka: KafkaOptions,
) -> None:
    """Put dead-lettered records back on the events topic, in their order, each for the
    service that dead-lettered it, and mark them replayed. Letters replayed before are
    left out unless --again; a --service or --saga that chooses none is an error."""
    reg = registry_or_fail(registry)
    names = [s.name for s in reg.services]
    if service is not None and service not in names:
        fail(
            f"unknown service {service!r}{did_you_mean(service, names)}; the registry has "
            f"{', '.join(names)}"
        )
    topic, dead_topic = reg.events_topic.name, reg.dead_letter_topic.name
    b = _bus(bus, kafka)

    async def go() -> tuple[list[Delivery], int, int]:
        async with b as live:
            deliveries = await live.read_all(dead_topic)
            done = replays(deliveries)
            chosen = [d for d in deliveries if not is_marker(d) and _wanted(d, service, saga_id)]
            what = _selection(service, saga_id)
            if what and not chosen:
                raise _Nothing(f"no dead letter of {what} in {dead_topic}")
            fresh = [d for d in chosen if again or (d.partition, d.offset) not in done]
            if what and not fresh:
                raise _Nothing(
                    f"every dead letter of {what} in {dead_topic} ({len(chosen)}) was "
                    "replayed before; --again replays them again"
                )
            fresh.sort(key=lambda d: (d.partition, d.offset))
            # An oversized record kept only its start: replaying it would only
            # dead-letter it again.
            cut = [d for d in fresh if d.record.header(TRUNCATED) is not None]
            fresh = [d for d in fresh if d.record.header(TRUNCATED) is None]
            if not dry_run and fresh:
                await live.publish(_copies(fresh, topic))
                now = time.time()
                await live.publish([marker_record(d, dead_topic, now) for d in fresh])
            return fresh, len(cut), len(chosen) - len(fresh) - len(cut)

    try:
        fresh, cut, before = asyncio.run(go())
    except _Nothing as exc:
        fail(str(exc))
    except EngineError as exc:
        fail(str(exc))
    if cut:
        click.echo(f"not replayed: {cut} truncated oversized record(s)", err=True)
    if dry_run:
        for d in fresh:
            x = DeadLetter.of(d)
            click.echo(
                f"{x.partition}/{x.offset}\t{_cell(x.service)}\t{_cell(x.saga_id)}"
                f"\t{_cell(x.event_type) or '?'}\t{_cell(x.event_id) or '?'}"
            )
    verb = "would replay" if dry_run else "replayed"
    rest = f" ({before} replayed before: --again replays them again)" if before else ""
    click.echo(f"{verb} {len(fresh)} record(s) from {dead_topic} onto {topic}{rest}")


def _copies(letters: Sequence[Delivery], topic: str) -> list[Record]:
    """The copies of `letters` (in order) for `topic`, each naming the events of the same
    saga and service whose copies follow it."""
    later: dict[tuple[str, str], list[str]] = {}
    thens: list[list[str]] = []
    for d in reversed(letters):
        x = DeadLetter.of(d)
        after = later.setdefault((x.service, x.saga_id), [])
        thens.append(list(reversed(after)))
        if x.event_id:
            after.append(x.event_id)
    return [
        replay_record(d.record, topic, f"{d.partition}/{d.offset}", then)
        for d, then in zip(letters, reversed(thens), strict=True)
    ]


class _Nothing(Exception):
    """The selection chose nothing to replay."""


def _wanted(d: Delivery, service: str | None, saga_id: str | None) -> bool:
    letter = DeadLetter.of(d)
    return (service is None or letter.service == service) and (
        saga_id is None or letter.saga_id == saga_id
    )


def _selection(service: str | None, saga_id: str | None) -> str:
    """The words naming what --service and --saga chose ("" for everything)."""
    parts: Sequence[str] = [
        *([f"service {service}"] if service is not None else []),
        *([f"saga {saga_id!r}"] if saga_id is not None else []),
    ]
    return " and ".join(parts)


__all__ = ["dlq"]
