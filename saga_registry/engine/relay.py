"""The outbox relay: publishes a service's committed outbox rows, then marks them sent.

A crash between publishing and marking publishes the rows again after restart; consumers
drop the copies by event id (their inbox). So nothing committed is ever lost, and nothing
is applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import bindparam, select, update

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus, Record
from saga_registry.engine.database import Database

log = logging.getLogger("saga.relay")

_o = tables.outbox
# Built once, so SQLAlchemy reuses their compiled form without rebuilding a cache key.
_UNSENT = (
    select(_o.c.id, _o.c.topic, _o.c.key, _o.c.headers, _o.c.value)
    .where(_o.c.sent_at.is_(None))
    .order_by(_o.c.id)
    .limit(bindparam("limit"))
)
_MARK_SENT = (
    update(_o).where(_o.c.id.in_(bindparam("ids", expanding=True))).values(sent_at=bindparam("now"))
)


class OutboxRelay:
    """Moves one database's outbox onto the bus, in commit order."""

    def __init__(
        self, db: Database, bus: Bus, *, batch: int = 500, idle_poll_s: float = 0.1
    ) -> None:
        self.db = db
        self.bus = bus
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the relay new rows were committed (it also polls on its own)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, then drain what is committed."""
        pause = 0.05
        while not stop.is_set():
            try:
                sent = await self.relay_once()
                pause = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # committed rows wait in the outbox; try again
                log.warning("relay: publish failed, retrying in %.2gs: %s", pause, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, 5.0)
                continue
            if sent < self.batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_s)
        with contextlib.suppress(Exception):  # best effort: rows stay for the next start
            while await self.relay_once():
                pass

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were sent."""
        async with self.db.transaction() as conn:
            rows = (await conn.execute(_UNSENT, {"limit": self.batch})).all()
        if not rows:
            return 0
        await self.bus.publish(
            [
                Record(r.topic, r.key, r.value, tuple((k, v.encode()) for k, v in r.headers))
                for r in rows
            ]
        )
        async with self.db.transaction() as conn:
            await conn.execute(_MARK_SENT, {"ids": [r.id for r in rows], "now": time.time()})
        return len(rows)
