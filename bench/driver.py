"""The load: places happy-path orders through OMS (as `saga order place` does), as fast as
they go or on a fixed schedule, and watches OrderHistory's archive for their end."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.errors import BenchError
from bench.scenario import Orders
from handlers.oms import record_order
from handlers.order_history import archive
from saga_registry.engine.database import Database
from saga_registry.engine.runner import ServiceRunner


@dataclass(frozen=True, slots=True)
class Timings:
    """When each measured order was placed and when its snapshot was archived (epoch s)."""

    placed: dict[str, float]
    archived: dict[str, float]
    placing_s: float
    """How long placing took (at a fixed rate: more than count / rate if the driver or
    OMS fell behind the schedule)."""

    @property
    def window_s(self) -> float:
        """From the first placement to the last archive."""
        return max(self.archived.values()) - min(self.placed.values())

    def latencies_ms(self) -> list[float]:
        """Per order: archived - placed, in ms."""
        return [(self.archived[k] - t) * 1000 for k, t in self.placed.items()]


class Driver:
    """Places orders through the OMS runner `oms` and reads `history`'s archive."""

    def __init__(
        self,
        oms: ServiceRunner,
        history: Database,
        *,
        check: Callable[[], None] = lambda: None,
        progress: bool = True,
    ) -> None:
        self.oms = oms
        self.history = history
        self.check = check
        """Called while waiting; raises a BenchError if a service process died."""
        self.progress = progress
        self._orders = Orders()
        self._placed_total = 0
        self._placing_s = 0.0

    async def warm_up(self, count: int, timeout_s: float) -> None:
        """Place `count` orders as fast as they go and wait until all have ended."""
        if count:
            await self._run([f"warm-{i:06d}" for i in range(count)], None, timeout_s, "warm-up")

    async def measure(self, count: int, rate: float | None, timeout_s: float) -> Timings:
        """Place `count` orders (at `rate` per second, or as fast as they go), wait until
        all have ended; returns their timings.

        At a fixed rate the schedule is open loop: an order's placement time is the time
        it was due, so a driver or an OMS falling behind shows as latency, not hidden."""
        ids = [f"order-{i:07d}" for i in range(count)]
        self._placing_s = 0.0
        placed = await self._run(ids, rate, timeout_s, "measured")
        async with self.history.transaction() as conn:
            rows = (
                await conn.execute(
                    select(archive.c.order_id, archive.c.archived_at).where(
                        archive.c.order_id.like("order-%")
                    )
                )
            ).all()
        return Timings(placed, {r.order_id: r.archived_at for r in rows}, self._placing_s)

    async def _run(
        self, ids: list[str], rate: float | None, timeout_s: float, label: str
    ) -> dict[str, float]:
        target = self._placed_total + len(ids)
        placing = asyncio.create_task(self._place(ids, rate), name="bench.place")
        try:
            await self._wait(target, timeout_s, label, len(ids), placing)
            return await placing
        finally:
            placing.cancel()

    async def _place(self, ids: list[str], rate: float | None) -> dict[str, float]:
        placed: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        start_loop, start_wall = loop.time(), time.time()
        for i, order_id in enumerate(ids):
            if rate is None:
                placed[order_id] = time.time()
            else:
                due = start_loop + i / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                placed[order_id] = start_wall + i / rate
            event = self._orders.make(order_id)

            async def effects(conn: AsyncConnection, event: Any = event) -> None:
                await record_order(conn, event)

            await self.oms.initiate(event, effects)
            self._placed_total += 1
        self._placing_s = loop.time() - start_loop
        return placed

    async def _wait(
        self,
        target: int,
        timeout_s: float,
        label: str,
        count: int,
        placing: asyncio.Task[dict[str, float]],
    ) -> None:
        started = time.monotonic()
        deadline = started + timeout_s
        shown = started
        done = 0
        while True:
            async with self.history.transaction() as conn:
                done = int(await conn.scalar(select(func.count()).select_from(archive)) or 0)
            if done >= target:
                return
            self.check()
            if placing.done() and placing.exception() is not None:
                await placing  # placing failed: its error is the one to report
            now = time.monotonic()
            if now >= deadline:
                raise BenchError(
                    f"{label}: only {count - (target - done)} of {count} sagas ended "
                    f"within {timeout_s:g} s (--timeout)"
                )
            if self.progress and now - shown >= 5:
                shown = now
                print(
                    f"  {label}: {count - (target - done)}/{count} sagas ended "
                    f"after {now - started:.0f} s",
                    file=sys.stderr,
                )
            await asyncio.sleep(0.1)
