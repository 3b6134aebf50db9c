"""What a saga that did not end in time is waiting for: a deadline armed in some service
(a row of its `saga_deadline_timers`) that the test has not moved the harness clock to."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import select

from saga_registry.engine import tables
from saga_registry.engine.app import RunningService


async def pending_deadline_hint(
    services: Sequence[RunningService], saga_id: str, now: float
) -> str:
    """'' if no service holds a timer of `saga_id` due after `now` (the harness clock);
    else the sentence that tells the test to advance the clock to the earliest one."""
    earliest: tuple[float, str] | None = None
    for s in services:
        async with s.db.transaction() as conn:
            rows = (
                await conn.execute(
                    select(tables.timers.c.state, tables.timers.c.due_at).where(
                        tables.timers.c.saga_id == saga_id
                    )
                )
            ).all()
        for state, due_at in rows:
            if earliest is None or due_at < earliest[0]:
                earliest = (float(due_at), str(state))
    if earliest is None or earliest[0] <= now:
        return ""
    due_at, state = earliest
    # Whole seconds, rounded up: advancing by them is sure to make the deadline due.
    wait = max(1, math.ceil(due_at - now))
    return (
        f"; a deadline is pending in state {state} (due in {wait}s on the harness clock): "
        f"call `await saga.advance({wait})` first"
    )
