"""Registry deadlines ("if no X within N s, emit Y"), fired from persisted timers.

A runner arms a timer in the same transaction that moves a saga into a state with a
deadline; this loop fires due timers. Timers live in the database, so a deadline fires
after a restart too. Firing re-checks the saga's state in the same transaction: a saga
that moved on meanwhile only loses its timer.

Traced (`engine.tracing`), each deadline event gets a PRODUCER span in the saga's trace,
under the span that moved the saga into the state it stayed in too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from saga_registry.engine import tables
from saga_registry.engine.answers import saga_row
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.runner import ServiceRunner

if TYPE_CHECKING:
    from saga_registry.engine.tracing import SendSpan

log = logging.getLogger("saga.timers")


class DeadlineTimers:
    """Fires the due deadlines of one service."""

    def __init__(self, runner: ServiceRunner, *, poll_s: float = 0.25) -> None:
        self.runner = runner
        self.poll_s = poll_s

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due deadlines until `stop` is set."""
        while not stop.is_set():
            try:
                await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # timers are in the database; the next pass retries
                log.warning("%s: deadline timers failed: %s", self.runner.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)

    async def fire_due(self, now: float | None = None) -> int:
        """Fire every timer due at `now`; returns how many events were emitted."""
        r = self.runner
        t = tables.timers
        now = time.time() if now is None else now
        emitted: list[dict[str, Any]] = []
        # Each fired deadline's span and event, ended once committed; if the transaction
        # fails they are never ended, so never exported (the next pass fires them again).
        spans: list[tuple[SendSpan, Envelope]] = []
        async with r.db.transaction() as conn:
            due = (
                await conn.execute(
                    select(t).where(t.c.due_at <= now).order_by(t.c.due_at).limit(500)
                )
            ).all()
            deadlines = {d.key: d for d in r.registry.state_machine.deadlines}
            for timer in due:
                deadline = deadlines.get(timer.deadline)
                stale = deadline is None or deadline.state != timer.state
                # A live deadline takes every timer of the saga: whichever fires first owns
                # the way out of the state, and a deferred answer then finds none to take.
                mine = t.c.saga_id == timer.saga_id
                if stale:
                    mine = mine & (t.c.deadline == timer.deadline)
                taken = await conn.execute(delete(t).where(mine))
                if not taken.rowcount:
                    continue  # answered meanwhile, or fired by another replica
                if deadline is None or stale:
                    # The registry changed since the timer was armed: that deadline is gone.
                    log.warning(
                        "%s: dropped a timer of saga %s: deadline %s in %s is no "
                        "longer in the registry",
                        r.name,
                        timer.saga_id,
                        timer.deadline,
                        timer.state,
                    )
                    continue
                row = await saga_row(conn, timer.saga_id)
                if row is None or row.state != timer.state:
                    continue
                payload = dict(deadline.payload)
                key_field = next(
                    f for f in r.registry.event(deadline.emit).fields if f.name == r.registry.key
                )
                payload[r.registry.key] = (
                    int(timer.saga_id) if key_field.type == "integer" else timer.saga_id
                )
                event = r.event_types[deadline.emit].from_dict(payload)
                span = None
                if r.tracing is not None:
                    stored = (row.traceparent or "", row.tracestate or "")
                    span = r.tracing.produce(deadline.emit, timer.saga_id, "deadline", stored)
                traceparent, tracestate = ("", "") if span is None else span.carrier
                env = Envelope.new(
                    type=deadline.emit,
                    source=f"{r.source}/deadline",
                    saga_id=timer.saga_id,
                    data=event.to_json(),
                    # The saga's one correlation id; caused by the event that moved the
                    # saga into the state it stayed in too long.
                    correlation_id=row.correlation_id,
                    causation_id=row.entered_by,
                    traceparent=traceparent,
                    tracestate=tracestate,
                )
                emitted.append(await r.write_outbox(conn, env, now))
                if span is not None:
                    spans.append((span, env))
                # Fired late when the service was down at the due time: the real wait.
                late = now - timer.due_at
                armed = deadline.within_s if timer.within_s is None else timer.within_s
                log.info(
                    "%s: deadline: saga %s stayed %.3gs in %s (deadline %gs%s), emitted %s",
                    r.name,
                    timer.saga_id,
                    armed + late,
                    timer.state,
                    armed,
                    f", fired {late:.3g}s late" if late >= 1 else "",
                    deadline.emit,
                )
        r.committed(emitted)
        for span, env in spans:
            span.sent(env)
        fired = len(emitted)
        if fired:
            r.metrics.inc("deadlines_fired", r.name, fired)
        return fired
