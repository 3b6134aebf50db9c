"""What a saga did: its events as the log holds them, and where it ended."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saga_registry.engine.bus import Bus, Delivery
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope


@dataclass(frozen=True)
class SagaResult:
    """A saga as it stands: `state` (its state in every service), `outcome` (the
    registry's `success`/`failure` of a terminal state, None otherwise), `events` (its
    event types in log order, each event once) and `records` (their envelopes)."""

    saga_id: str
    state: str
    outcome: str | None
    events: list[str]
    records: list[Envelope] = field(repr=False)
    event_types: Mapping[str, Any] = field(repr=False, compare=False)
    parked: Mapping[str, str] = field(default_factory=dict)
    """The services that parked the saga, each with the error (`SagaRun.wait_parked`)."""

    def event(self, type_name: str) -> Any:
        """The first event of type `type_name` the saga had, decoded into its generated
        class; KeyError naming the saga's events if it had none."""
        for env in self.records:
            if env.type == type_name:
                return self.event_types[type_name].from_json(env.data)
        raise KeyError(
            f"saga {self.saga_id} had no {type_name} event; its events were: "
            f"{', '.join(self.events) or 'none'}"
        )


async def saga_records(bus: Bus, topic: str, saga_id: str) -> list[Envelope]:
    """The envelopes of saga `saga_id` on `topic`, in log order, each event once.

    A saga's records share its key, so they sit in one partition in the order every
    service applied them; a copy published again (relay retry) is left out by event id."""
    return envelopes_of(await bus.read_all(topic), saga_id)


def envelopes_of(deliveries: Sequence[Delivery], saga_id: str) -> list[Envelope]:
    """The envelopes of `saga_id` among `deliveries` (unreadable records left out)."""
    key = saga_id.encode()
    seen: set[str] = set()
    out: list[Envelope] = []
    for d in sorted(deliveries, key=lambda d: (d.partition, d.offset)):
        if d.record.key != key:
            continue
        try:
            env = Envelope.from_record(d.record)
        except BadEnvelope:
            continue
        if env.id not in seen:
            seen.add(env.id)
            out.append(env)
    return out
