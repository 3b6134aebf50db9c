"""`saga dlq list` and `saga dlq replay`: read the dead-letter topic, put letters back
(`saga_registry.engine.replay` says how; `list` shows each letter's last replay)."""

from __future__ import annotations

import asyncio
import time

import click

from saga_registry.cli.options import (
    bus_option,
    fail,
    kafka_security,
    registry_option,
    registry_or_fail,
)
from saga_registry.engine.bus import Bus, Delivery
from saga_registry.engine.buses import KafkaOptions, bus_from_url
from saga_registry.engine.deadletter import (
    DeadLetter,
    letters,
    one_line,
    replays,
)
from saga_registry.engine.errors import EngineError
from saga_registry.engine.replay import Replayed, replay
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
    b = _bus(bus, kafka)

    async def go() -> Replayed:
        async with b as live:
            return await replay(
                live, reg, service=service, saga_id=saga_id, again=again, dry_run=dry_run
            )

    try:
        done = asyncio.run(go())
    except EngineError as exc:  # NothingToReplay included
        fail(str(exc))
    fresh, cut, before = done.letters, done.truncated, done.before
    topic, dead_topic = done.events_topic, done.dead_letter_topic
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


__all__ = ["dlq"]
