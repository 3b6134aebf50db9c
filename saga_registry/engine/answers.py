"""Events a service emits outside any reaction: a saga's first event (`initiates` in
the registry) and the late answer of a deferred reaction (`ServiceBase.answer`). Each is
written to the outbox in one transaction with the caller's effects, so once the call
returns the event survives a crash.

Traced (`engine.tracing`), each gets a PRODUCER span covering its transaction and the
hand-over to the relay, and the event carries that span's context: a saga's first event
starts a trace (or joins the caller's current one), a late answer continues the saga's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from saga_registry.engine import tables
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import ForbiddenEmit
from saga_registry.engine.service import Effects

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from saga_registry.engine.runner import ServiceRunner
    from saga_registry.engine.tracing import SendSpan


async def initiate(runner: ServiceRunner, event: Any, effects: Effects | None = None) -> Envelope:
    """Emit `event` outside any reaction: a saga's first event (`initiates` in the
    registry), which starts a correlation chain of its own. `effects` runs in the
    same transaction as the outbox row. Returns the envelope queued for the relay.

    The late answer of a deferred reaction is taken here too, and goes to `answer`."""
    kind = getattr(event, "event_type", type(event).__name__)
    if kind not in runner.initiates:
        if kind in runner.answers:
            return await answer(runner, event, effects)
        raise ForbiddenEmit(
            f"{runner.name} may not initiate {kind}: the registry lets it "
            f"initiate {', '.join(sorted(runner.initiates)) or 'nothing'}"
        )
    saga_id = event.saga_id()
    with _Sending() as sending:
        if runner.tracing is not None:
            sending.span = runner.tracing.produce(kind, saga_id, "initiate")
        traceparent, tracestate = sending.carrier
        env = sending.env = Envelope.new(
            type=kind,
            source=runner.source,
            saga_id=saga_id,
            data=event.to_json(),
            traceparent=traceparent,
            tracestate=tracestate,
        )
        async with runner.db.transaction() as conn:
            if effects is not None:
                await effects(conn)
            row = await runner.write_outbox(conn, env, time.time())
        runner.committed([row])
    return env


async def answer(runner: ServiceRunner, event: Any, effects: Effects | None = None) -> Envelope:
    """Emit `event`, the late answer of a deferred reaction (`ServiceBase.answer`).
    `effects` runs in the same transaction as the outbox row.

    The answer counts only while the saga still waits for it: the saga must be in a
    state the answer leaves, and the answer takes the saga's pending deadline in the
    same transaction; otherwise it is refused (ForbiddenEmit, nothing written). It
    carries the saga's correlation id, and as its cause the event that moved the
    saga into the state it waits in."""
    kind = getattr(event, "event_type", type(event).__name__)
    if kind not in runner.answers:
        raise ForbiddenEmit(
            f"{runner.name} may not answer with {kind}: the registry lets it answer "
            f"deferred reactions with {', '.join(sorted(runner.answers)) or 'nothing'}"
        )
    saga_id = event.saga_id()
    data = event.to_json()
    with _Sending() as sending:
        async with runner.db.transaction() as conn:
            row = await saga_row(conn, saga_id)
            if row is None:
                raise ForbiddenEmit(f"{kind} for saga {saga_id}: {runner.name} never saw that saga")
            if runner.tracing is not None:
                # In the saga's trace, under the span that moved it into the state it
                # waits in (the caller's own span, if any, is linked).
                stored = (row.traceparent or "", row.tracestate or "")
                sending.span = runner.tracing.produce(kind, saga_id, "answer", stored)
            await _still_waits(runner, conn, row.state, kind, saga_id)
            traceparent, tracestate = sending.carrier
            env = sending.env = Envelope.new(
                type=kind,
                source=runner.source,
                saga_id=saga_id,
                data=data,
                correlation_id=row.correlation_id,
                causation_id=row.entered_by,
                traceparent=traceparent,
                tracestate=tracestate,
            )
            if effects is not None:
                await effects(conn)
            queued = await runner.write_outbox(conn, env, time.time())
        runner.committed([queued])
    return env


class _Sending:
    """The span of one event emitted outside a reaction, when traced: ended as sent with
    `env` when the block completes, as failed with the exception when it raises."""

    def __init__(self) -> None:
        self.span: SendSpan | None = None
        self.env: Envelope | None = None

    @property
    def carrier(self) -> tuple[str, str]:
        """The span's (traceparent, tracestate) for the event; empty when not traced."""
        return ("", "") if self.span is None else self.span.carrier

    def __enter__(self) -> _Sending:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self.span is None:
            return
        if exc is not None:
            self.span.failed(exc)
        elif self.env is not None:
            self.span.sent(self.env)


async def saga_row(conn: AsyncConnection, saga_id: str) -> Any:
    """What an event emitted outside a reaction (a late answer, a deadline's) takes from
    its saga's stored state: `state`, `correlation_id`, `entered_by` (the event that moved
    it there: the cause) and the trace context stored with it; None if no such saga."""
    saga = tables.saga_state.c
    query = select(
        saga.state, saga.correlation_id, saga.entered_by, saga.traceparent, saga.tracestate
    ).where(saga.saga_id == saga_id)
    return (await conn.execute(query)).first()


async def _still_waits(
    runner: ServiceRunner, conn: AsyncConnection, state: str, kind: str, saga_id: str
) -> None:
    """Raise `ForbiddenEmit` unless the saga, in `state`, still waits for the answer
    `kind`; take its pending deadline (in `conn`'s transaction) if it has one."""
    if not runner.machine.decide(state, kind).allowed:
        raise ForbiddenEmit(
            f"{kind} for saga {saga_id} is too late: the saga is in state "
            f"{state}, where {kind} does not apply"
        )
    if any(d.key in runner.deadlines.own for d in runner.machine.deadlines_in(state)):
        # Whoever deletes the timer row owns the saga's answer: this answer or the
        # deadline, never both (PostgreSQL's row lock orders concurrent deletes).
        taken = await conn.execute(delete(tables.timers).where(tables.timers.c.saga_id == saga_id))
        if not taken.rowcount:
            raise ForbiddenEmit(
                f"{kind} for saga {saga_id} is too late: the saga no longer waits "
                "for it (its deadline fired, or it was answered already)"
            )
