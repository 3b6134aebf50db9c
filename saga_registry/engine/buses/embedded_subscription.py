"""A consumer group's subscription to the embedded log."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from saga_registry.engine.bus import Delivery, Owner, Subscription, next_offsets
from saga_registry.engine.buses.embedded_rows import delivery_of
from saga_registry.engine.errors import BusUnavailable

if TYPE_CHECKING:
    from saga_registry.engine.buses.embedded import EmbeddedBus


class EmbeddedSubscription(Subscription):
    """Reads `topics` for `group`, from the group's committed offsets on.

    The read position lives in memory: it moves on as records are handed out, and a new
    subscription starts again from the committed offsets.
    """

    def __init__(self, bus: EmbeddedBus, group: str, topics: tuple[str, ...], owner: Owner) -> None:
        self._bus = bus
        self._group = group
        self._topics = topics
        self._owner = owner
        self._positions: dict[tuple[str, int], int] = {}
        self._turn = 0
        self._closed = False

    async def fetch(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Delivery]:
        """Up to `max_records` next deliveries, polling until some come or `timeout_s` ends."""
        if self._closed:
            raise BusUnavailable("embedded subscription is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            deliveries = await self._bus._read(lambda c: self._next(c, max_records))
            if deliveries or loop.time() >= deadline:
                return deliveries
            await asyncio.sleep(min(self._bus.poll_interval_s, max(0.0, deadline - loop.time())))

    def _next(self, conn: sqlite3.Connection, max_records: int) -> list[Delivery]:
        self._discover(conn)
        places = sorted(self._positions)
        if not places:
            return []
        # Start at a different partition each time, so a busy one cannot starve the rest.
        self._turn = (self._turn + 1) % len(places)
        out: list[Delivery] = []
        for place in places[self._turn :] + places[: self._turn]:
            if len(out) >= max_records:
                break
            topic, partition = place
            rows = conn.execute(
                'SELECT "partition", "offset", key, headers, value FROM records'
                ' WHERE topic = ? AND "partition" = ? AND "offset" >= ?'
                ' ORDER BY "offset" LIMIT ?',
                (topic, partition, self._positions[place], max_records - len(out)),
            ).fetchall()
            if rows:
                out.extend(delivery_of(topic, row) for row in rows)
                self._positions[place] = rows[-1][1] + 1
        return out

    def _discover(self, conn: sqlite3.Connection) -> None:
        """Add partitions not seen yet, at the group's committed offset (0 if none)."""
        marks = ",".join("?" * len(self._topics))
        known = conn.execute(
            f"SELECT name, partitions FROM topics WHERE name IN ({marks})", self._topics
        ).fetchall()
        for topic, partitions in known:
            for partition in range(partitions):
                if (topic, partition) in self._positions:
                    continue
                row = conn.execute(
                    'SELECT next_offset FROM group_offsets WHERE "group" = ? AND topic = ?'
                    ' AND "partition" = ?',
                    (self._group, topic, partition),
                ).fetchone()
                self._positions[(topic, partition)] = int(row[0]) if row else 0

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Store, per partition, the offset after the highest delivery given."""
        nexts = next_offsets(deliveries)
        if not nexts:
            return
        rows = [
            (self._group, topic, partition, n, self._owner.id)
            for (topic, partition), n in nexts.items()
        ]
        await self._bus._write(
            lambda c: c.executemany(
                'INSERT INTO group_offsets ("group", topic, "partition", next_offset, owner)'
                ' VALUES (?, ?, ?, ?, ?) ON CONFLICT ("group", topic, "partition")'
                " DO UPDATE SET next_offset = excluded.next_offset, owner = excluded.owner",
                rows,
            )
        )

    async def lag(self) -> dict[tuple[str, int], int]:
        """Per partition read so far: records past the read position."""
        places = dict(self._positions)

        def ends(conn: sqlite3.Connection) -> dict[tuple[str, int], int]:
            return {
                place: conn.execute(
                    'SELECT COALESCE(MAX("offset") + 1, 0) FROM records'
                    ' WHERE topic = ? AND "partition" = ?',
                    place,
                ).fetchone()[0]
                for place in places
            }

        end = await self._bus._read(ends)
        return {place: max(0, end[place] - at) for place, at in places.items()}

    async def close(self) -> None:
        """Forget the read position; uncommitted deliveries come again to the next one."""
        self._closed = True
        self._positions.clear()
