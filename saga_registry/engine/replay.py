"""Putting dead letters back on the events topic (`saga dlq replay`, `saga ui`).

A replay publishes, for each chosen letter in its order, a copy on the events topic meant
for the one service whose letter it is (header `saga_replay_for`: the other services let
it pass) and naming the events of the same saga whose copies follow it (header
`saga_replay_then`, see `engine.parking`), then a marker on the dead-letter topic naming
the letter's place and the time (header `saga_replay_marker`). A later replay leaves
marked letters out unless `again`. Copies go first: a replay cut short between the two
leaves a letter unmarked (replayed again next time, a copy its service drops by its id)
rather than marked but never put back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from saga_registry.engine.bus import Bus, Delivery, Record
from saga_registry.engine.deadletter import (
    TRUNCATED,
    DeadLetter,
    is_marker,
    marker_record,
    replay_record,
    replays,
)
from saga_registry.engine.errors import EngineError
from saga_registry.registry.model import Registry


class NothingToReplay(EngineError):
    """A selection (a service, a saga) chose no letter, or only letters replayed before."""


@dataclass(frozen=True)
class Replayed:
    """What a replay put back (or, dry, would put back)."""

    letters: list[Delivery]
    """The letters replayed, in order."""
    truncated: int
    """Chosen letters left out: oversized records that kept only their start."""
    before: int
    """Chosen letters left out because they were replayed before (without `again`)."""
    events_topic: str
    dead_letter_topic: str


async def replay(
    bus: Bus,
    registry: Registry,
    *,
    service: str | None = None,
    saga_id: str | None = None,
    again: bool = False,
    dry_run: bool = False,
) -> Replayed:
    """Replay the dead letters of `service` and `saga_id` (None: any) on the started
    `bus`. Raises `NothingToReplay` when a selection was given and chose none, or only
    letters replayed before (without `again`)."""
    topic, dead_topic = registry.events_topic.name, registry.dead_letter_topic.name
    deliveries = await bus.read_all(dead_topic)
    done = replays(deliveries)
    chosen = [d for d in deliveries if not is_marker(d) and _wanted(d, service, saga_id)]
    what = selection(service, saga_id)
    if what and not chosen:
        raise NothingToReplay(f"no dead letter of {what} in {dead_topic}")
    fresh = [d for d in chosen if again or (d.partition, d.offset) not in done]
    if what and not fresh:
        raise NothingToReplay(
            f"every dead letter of {what} in {dead_topic} ({len(chosen)}) was "
            "replayed before; --again replays them again"
        )
    fresh.sort(key=lambda d: (d.partition, d.offset))
    # An oversized record kept only its start: replaying it would only dead-letter it again.
    cut = [d for d in fresh if d.record.header(TRUNCATED) is not None]
    fresh = [d for d in fresh if d.record.header(TRUNCATED) is None]
    if not dry_run and fresh:
        await bus.publish(_copies(fresh, topic))
        now = time.time()
        await bus.publish([marker_record(d, dead_topic, now) for d in fresh])
    return Replayed(fresh, len(cut), len(chosen) - len(fresh) - len(cut), topic, dead_topic)


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


def _wanted(d: Delivery, service: str | None, saga_id: str | None) -> bool:
    letter = DeadLetter.of(d)
    return (service is None or letter.service == service) and (
        saga_id is None or letter.saga_id == saga_id
    )


def selection(service: str | None, saga_id: str | None) -> str:
    """The words naming what a service and a saga choose ("" for everything)."""
    parts: Sequence[str] = [
        *([f"service {service}"] if service is not None else []),
        *([f"saga {saga_id!r}"] if saga_id is not None else []),
    ]
    return " and ".join(parts)
