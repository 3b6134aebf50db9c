"""What the web view shows, read from the services' databases and the dead-letter topic
(the same readers as `saga sagas`, `saga trace` and `saga dlq`). Nothing here writes but
`replay`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from saga_registry.engine import inspect
from saga_registry.engine.bus import Bus, Delivery
from saga_registry.engine.buses import EmbeddedBus, KafkaOptions, bus_from_url
from saga_registry.engine.dead_letters import read_dead_letters
from saga_registry.engine.deadletter import DeadLetter, letters, replays
from saga_registry.engine.errors import EngineError
from saga_registry.engine.listing import listing
from saga_registry.engine.replay import replay
from saga_registry.engine.trace import Trace, build_trace, letters_of, trace_doc
from saga_registry.registry.model import Registry


@dataclass
class Source:
    """Where a registry's sagas live: its services' databases and its bus."""

    registry: Registry
    db: str
    """The database URL template (`{service}` in it)."""
    bus: str
    kafka: KafkaOptions = field(default_factory=KafkaOptions)
    stuck_for: float | None = None
    """A saga not updated for longer counts as stuck (besides overdue deadlines)."""

    def _bus(self) -> Bus | None:
        """The bus, or None when there is no log to read (no embedded file yet)."""
        bus = bus_from_url(self.bus, kafka_options=self.kafka)
        if isinstance(bus, EmbeddedBus) and not bus.path.is_file():
            return None
        return bus

    async def overview(self) -> dict[str, Any]:
        """Counts: sagas by status, state and outcome; events taken in by (event, service)
        for the choreography's edges; dead letters; and the notes of databases not read."""
        taken: Counter[tuple[str, str]] = Counter()
        views, notes = await inspect.saga_views(self.registry, self.db, self._count_taken_in(taken))
        listed = listing(self.registry, views, stuck_for=self.stuck_for)
        doc = listed.doc(limit=0)
        return {
            "registry": self.registry.title,
            "services": [s.name for s in self.registry.services],
            "states": [s.name for s in self.registry.state_machine.states],
            "counts": doc["counts"],
            "total": doc["total"],
            "taken_in": [{"event": e, "service": s, "count": n} for (e, s), n in taken.items()],
            "notes": notes,
            "at": time.time(),
        }

    @staticmethod
    def _count_taken_in(counts: Counter[tuple[str, str]]) -> Callable[[str, Any], Awaitable[None]]:
        """A reader adding each database's inbox rows, by event type, to `counts`."""

        async def count(service: str, conn: Any) -> None:
            result = await conn.exec_driver_sql(
                "SELECT event_type, COUNT(*) FROM saga_inbox GROUP BY event_type"
            )
            for event_type, n in cast(list[tuple[str, int]], result.all()):
                counts[(event_type, service)] += n

        return count

    async def sagas(self, *, state: str | None, search: str, limit: int) -> dict[str, Any]:
        """The sagas in `state` (a state or a status) whose id contains `search`, stuck and
        parked ones first."""
        views, notes = await inspect.saga_views(self.registry, self.db)
        listed = listing(
            self.registry,
            views,
            state=state or None,
            search=search,
            stuck_for=self.stuck_for,
            stuck_first=True,
        )
        return {**listed.doc(limit), "notes": notes}

    async def trace(self, saga_id: str) -> tuple[Trace | None, list[str]]:
        """One saga's trace with its dead letters (None if no service has seen it), and
        the notes of what could not be read."""
        records, notes = await inspect.saga_records(self.registry, self.db, saga_id)
        dead = await self._dead_letter_records(notes)
        found = letters_of(dead, saga_id, self.registry.events_topic.name)
        if all(r.empty() for r in records.values()) and not found:
            return None, notes
        return build_trace(self.registry, saga_id, records, found), notes

    async def saga(self, saga_id: str) -> dict[str, Any] | None:
        """One saga's trace as `saga trace --json` gives it, each event with its kind;
        None if no service has seen it."""
        t, notes = await self.trace(saga_id)
        if t is None:
            return None
        kinds = {e.name: e.kind for e in self.registry.events}
        doc = trace_doc(self.registry, t)
        for event in doc["events"]:
            event["kind"] = kinds.get(event["event_type"], "unknown")
        doc["notes"] = notes
        return doc

    async def dead_letters(self) -> dict[str, Any]:
        """Every dead letter with its error and whether it was replayed."""
        notes: list[str] = []
        deliveries = await self._dead_letter_records(notes)
        done = replays(deliveries)
        rows = []
        for d in letters(deliveries):
            at = done.get((d.partition, d.offset))
            rows.append(
                {
                    "place": f"{d.partition}/{d.offset}",
                    "service": d.service,
                    "saga_id": d.saga_id,
                    "event_type": d.event_type,
                    "event_id": d.event_id,
                    "attempts": d.attempts,
                    "error": f"{d.error_type}: {d.error}" if d.error_type else d.error,
                    "replayed_at": at,
                    "replay_of": d.replay_of,
                }
            )
        return {"letters": rows, "notes": notes}

    async def _dead_letter_records(self, notes: list[str]) -> list[Delivery]:
        deliveries, note = await read_dead_letters(self.registry, self.bus, self.kafka)
        notes.extend([note] if note else [])
        return deliveries

    async def replay(self, service: str, saga_id: str) -> dict[str, Any]:
        """Replay the dead letters of `saga_id` from `service` (`saga dlq replay --service
        S --saga ID`); raises `EngineError` (one line) when there is none to replay."""
        bus = self._bus()
        if bus is None:
            raise EngineError(f"no log at {self.bus}")
        async with bus as live:
            done = await replay(live, self.registry, service=service, saga_id=saga_id)
        return {
            "replayed": [DeadLetter.of(d).event_id for d in done.letters],
            "truncated": done.truncated,
        }
