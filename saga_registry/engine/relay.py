"""The outbox relay: publishes a service's committed outbox rows, then marks them sent.

What a transaction of the process that runs the relay queued is handed to it right after
the commit (`committed`) and published at once, without reading it back: the outbox row
is only the crash backstop. Rows nobody handed over (written by another process, such as
one that only starts sagas, or left by a crash between commit and publish) are found by
polling the outbox every `idle_poll_s`. A row is claimed by whichever path takes it first
until it is marked sent, so that the other does not publish it again.

A crash between publishing and marking publishes the rows again after restart; consumers
drop the copies by event id (their inbox). So nothing committed is ever lost, and nothing
is applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, bindparam, select

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus, Record
from saga_registry.engine.database import Database
from saga_registry.engine.deadletter import one_line
from saga_registry.engine.rows import mark_sent

log = logging.getLogger("saga.relay")

MARK_AFTER_S = 0.1
"""How long published rows wait to be marked sent, so that one transaction marks many
(a crash meanwhile only publishes them again: duplicates, which consumers drop)."""

_o = tables.outbox
# Built once, so SQLAlchemy reuses their compiled form without rebuilding a cache key.
_UNSENT = (
    select(_o.c.id, _o.c.event_id, _o.c.topic, _o.c.key, _o.c.headers, _o.c.value)
    .where(_o.c.sent_at.is_(None))
    .order_by(_o.c.id)
    .limit(bindparam("limit"))
)
OutboxRow = Mapping[str, Any]
"""An outbox row as written (`ServiceRunner.outbox_row`)."""


def record_of(row: OutboxRow | RowMapping) -> Record:
    """The bus record an outbox row holds (or a `saga_parked_held` row: stored alike)."""
    return Record(
        row["topic"], row["key"], row["value"], tuple((k, v.encode()) for k, v in row["headers"])
    )


class OutboxRelay:
    """Moves one database's outbox onto the bus, in commit order."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        batch: int = 500,
        idle_poll_s: float = 0.1,
    ) -> None:
        self.db = db
        self.bus = bus
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._fresh: list[tuple[str, Record]] = []
        """Handed over after their commit, not yet published, in commit order."""
        self._claimed: set[str] = set()
        """Event ids queued or published and not yet marked sent: neither path takes
        them a second time."""
        self._running = False
        self._unmarked: list[str] = []
        """Published, not yet marked sent (`_mark`)."""
        self._released: set[str] = set()
        """Claims released since the running poll began: marked sent, though that poll's
        read may have seen them unsent."""
        self._marking: asyncio.Task[None] | None = None

    def committed(self, rows: Sequence[OutboxRow]) -> None:
        """Have `rows`, just committed to the outbox, published at once, in commit order,
        by the running relay; returns without waiting for it. Where the relay does not
        run (a process that only starts sagas), this does nothing: the relay of the
        service's own process polls the outbox, or the caller drains it (`relay_once`).

        Publishing them here instead was measured: the placer then pays for the publish,
        and the services, never behind, handle one small batch per event, which costs
        more CPU per saga than the poll's latency saves on a saturated machine."""
        if not self._running:
            return
        fresh = [(r["event_id"], record_of(r)) for r in rows if r["event_id"] not in self._claimed]
        if fresh:
            self._claimed.update(i for i, _ in fresh)
            self._fresh.extend(fresh)
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, then drain what is committed: what is handed over
        at once, the outbox's other rows every `idle_poll_s`."""
        self._running = True
        pause = 0.05
        polled_at = 0.0
        try:
            while not stop.is_set():
                try:
                    if self._fresh:
                        await self._publish_fresh()
                    elif time.monotonic() - polled_at >= self.idle_poll_s:
                        if await self.relay_once() < self.batch:
                            polled_at = time.monotonic()
                    else:
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)
                    pause = 0.05
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # committed rows wait in the outbox; try again
                    log.warning("relay: publish failed, retrying in %.2gs: %s", pause, exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
                    pause = min(pause * 2, 5.0)
            with contextlib.suppress(Exception):  # best effort: rows stay for the next start
                while self._fresh:
                    await self._publish_fresh()
                while await self.relay_once():
                    pass
                await self.flush()
        finally:
            self._running = False

    async def _publish_fresh(self) -> None:
        """Publish what was handed over, in order (one batch), and mark it sent."""
        fresh, self._fresh = self._fresh[: self.batch], self._fresh[self.batch :]
        try:
            await self.bus.publish([r for _, r in fresh])
        except BaseException:
            self._fresh[:0] = fresh  # in order, before anything handed over since
            raise
        self._mark([i for i, _ in fresh])

    async def relay_once(self) -> int:
        """Publish one batch of the unsent rows nobody has claimed; returns how many."""
        self._released = set()
        async with self.db.transaction() as conn:
            rows = (await conn.execute(_UNSENT, {"limit": self.batch})).all()
        taken = self._claimed | self._released
        polled = [(r.event_id, record_of(r._mapping)) for r in rows if r.event_id not in taken]
        if not polled:
            return 0
        self._claimed.update(i for i, _ in polled)
        try:
            await self.bus.publish([r for _, r in polled])
        except BaseException:
            self._claimed.difference_update(i for i, _ in polled)  # for a later poll
            raise
        self._mark([i for i, _ in polled])
        return len(polled)

    def _mark(self, ids: list[str]) -> None:
        """Mark the published rows `ids` sent, MARK_AFTER_S later, together with those
        published meanwhile: one transaction for many publishes."""
        self._unmarked.extend(ids)
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_later(), name="relay.mark")

    async def _mark_later(self) -> None:
        # Until none is left: rows published while a flush runs join the next one.
        while self._unmarked:
            await asyncio.sleep(MARK_AFTER_S)
            with contextlib.suppress(Exception):  # said by `flush`, published again later
                await self.flush()

    async def flush(self) -> None:
        """Mark every published row sent now (before a stop), and release their claims."""
        ids, self._unmarked = self._unmarked, []
        if not ids:
            return
        try:
            async with self.db.transaction() as conn:
                await mark_sent(conn, ids, time.time())
        except Exception as exc:
            log.warning("relay: cannot mark %d published rows sent: %s", len(ids), one_line(exc))
            raise
        finally:
            # Unmarked (the database failed after the publish), a row is published again
            # by a later poll: a duplicate copy, which consumers drop.
            self._claimed.difference_update(ids)
            self._released.update(ids)
