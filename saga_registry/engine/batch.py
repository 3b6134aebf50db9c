"""Applying deliveries: the one implementation (`apply_items`), for a whole poll batch in
one database transaction (`apply_batch`, the fast path) and for one delivery in its own
transaction (the runner's one-by-one path, a batch of one, with its retries).

Either way every delivery gets its inbox row (dedupe), its saga's new state, its
reaction's writes and its outbox rows, in delivery order, and everything commits
together before the consumer commits the offsets. A batch saves the per-delivery
overhead: one BEGIN/COMMIT per batch instead of per record, one query each for the
batch's seen events, parked sagas and saga states instead of three per record, and the
engine's own rows written in bulk at the end.

The batch path only takes the ordinary case. A delivery that is undecodable, whose saga is
parked, or whose reaction raises makes the whole batch roll back (nothing of it was
written) and go through the one-by-one path, which retries, dead-letters and parks; so a
failure can neither lose nor double-apply the deliveries around it. Infrastructure errors
(database, bus) propagate as before: nothing is committed, the offsets are not, and the
consumer resubscribes.

Traced (`engine.tracing`), each delivery gets its span when it is applied; a batch's spans
end only once the batch committed. A batch that rolls back leaves its spans unended, and
an unended span is never exported: the deliveries' spans are those of the one-by-one
path, so no delivery has two spans that both claim to have applied it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import rows, tables
from saga_registry.engine.bus import Delivery, next_offsets
from saga_registry.engine.deadletter import passes_by
from saga_registry.engine.deadlines import PendingTimers
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope
from saga_registry.engine.parking import Parked, is_letter_copy, is_parked

if TYPE_CHECKING:
    from saga_registry.engine.runner import ServiceRunner
    from saga_registry.engine.tracing import DeliverySpan


log = logging.getLogger("saga.runner")


class NeedsOneByOne(Exception):
    """Some delivery of the batch needs the one-by-one path (bad record, parked saga)."""


async def apply_batch(
    runner: ServiceRunner, batch: Sequence[Delivery], positions: Sequence[Delivery]
) -> BatchApplied:
    """Apply `batch` in one transaction of `runner`'s database, which also raises the
    database's marks past `positions` (the batch and what was passed around it);
    returns the outcome of each delivery (applied, duplicate, skipped), the outbox
    rows written and, when traced, each delivery's span, for the caller to end once
    it handed the rows to the relay. Raises `NeedsOneByOne` (nothing written) when a
    delivery needs the one-by-one path; a reaction's own error propagates, likewise
    with nothing written."""
    limit = runner.settings.max_record_bytes
    if any(d.record.size() > limit for d in batch):
        raise NeedsOneByOne  # dead-lettered there, unread
    if any(passes_by(d, runner.name) for d in batch):
        raise NeedsOneByOne  # passed there: rare (a replay), not worth a path of its own
    try:
        items = [(d, *runner.codec.read(d)) for d in batch]
    except BadEnvelope:
        raise NeedsOneByOne from None
    spans = None if runner.tracing is None else runner.tracing.consume_all(items)
    async with runner.db.transaction() as conn:
        outcomes, emitted = await apply_items(runner, conn, items, spans=spans)
        await rows.raise_marks(conn, next_offsets(positions))
    return outcomes, emitted, spans


Item = tuple[Delivery, Envelope, Any]
"""A delivery, its envelope and its typed event."""

Applied = tuple[list[str], list[dict[str, Any]]]
"""Each delivery's outcome, and the outbox rows written (to hand to the relay once
the transaction commits)."""

BatchApplied = tuple[list[str], list[dict[str, Any]], "list[DeliverySpan] | None"]
"""`Applied`, and each delivery's span when traced."""


async def apply_items(
    runner: ServiceRunner,
    conn: AsyncConnection,
    items: Sequence[Item],
    *,
    alone: bool = False,
    spans: Sequence[DeliverySpan] | None = None,
) -> Applied:
    """Apply decoded deliveries in order inside `conn`'s transaction: for each, its inbox
    row (or a skip: duplicate, not allowed), its saga's new state, its reaction's writes
    and outbox rows, its timers; the engine's own rows written in bulk at the end. Returns
    each delivery's outcome and the outbox rows.

    The one implementation of a delivery, for a poll batch and for one delivery `alone`
    (the one-by-one path, with its retries). A parked saga raises `NeedsOneByOne` for a
    batch; `alone`, `Parked` (and a replayed copy of the event the saga waits for goes
    through, see `engine.parking`).

    `spans` (traced): each item's span, given the saga's states and the context for what
    its reaction emits; the spans that moved a saga are stored with its state."""
    now = time.time()
    sagas = list({env.saga_id for _, env, _ in items})
    ids = list({env.id for _, env, _ in items})
    seen = await rows.seen(conn, ids)
    if alone:
        ((delivery, env, _),) = items
        if (env.id, env.source) not in seen:
            if await is_letter_copy(conn, env, delivery):
                seen.add((env.id, env.source))  # skipped below as a duplicate
            elif await is_parked(conn, env, delivery):
                raise Parked
    elif await rows.any_parked(conn, sagas):
        raise NeedsOneByOne
    states = await rows.states(conn, sagas)
    stored = set(states)
    inbox_rows: list[dict[str, Any]] = []
    skipped_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    moved: set[str] = set()
    outcomes: list[str] = []
    entered: dict[str, str] = {}
    correlation: dict[str, str] = {}
    timers = PendingTimers()
    traced: dict[str, DeliverySpan] = {}
    for n, (delivery, env, event) in enumerate(items):
        if (env.id, env.source) in seen:
            skipped_rows.append(skip_row(env, delivery, None, "duplicate", now))
            outcomes.append("duplicate")
            continue
        seen.add((env.id, env.source))
        inbox_rows.append(inbox_row(env, delivery, now))
        step = runner.machine.decide(states.get(env.saga_id), env.type)
        span = None if spans is None else spans[n]
        if span is not None:
            span.moved(step.source, step.target)
        if step.target is None:
            skipped_rows.append(skip_row(env, delivery, step.source, "not_allowed", now))
            log_not_allowed(runner.name, env, step.source)
            outcomes.append("skipped")
            continue
        if env.saga_id not in states:
            correlation[env.saga_id] = env.correlation_id
        states[env.saga_id] = step.target
        entered[env.saga_id] = env.id
        if span is not None:
            traced[env.saga_id] = span
        moved.add(env.saga_id)
        emitted = await runner.react(conn, env, event, step, span)
        if emitted is not None:
            outbox_rows.append(runner.outbox_row(emitted, now))
        await runner.deadlines.arm(conn, env.saga_id, step, emitted, timers)
        outcomes.append("applied")
    # The engine's own rows, in bulk; outbox rows keep delivery order (their ids give
    # the relay's publishing order).
    await rows.insert_inbox(conn, inbox_rows)
    await rows.insert_skipped(conn, skipped_rows)
    await rows.insert_states(
        conn,
        ((s, states[s], now, correlation[s], entered[s], now) for s in moved if s not in stored),
    )
    await rows.update_states(conn, ((s, states[s], now, entered[s]) for s in moved if s in stored))
    await rows.insert_outbox(conn, outbox_rows)
    if traced:
        await store_trace(conn, {s: traced[s].carrier for s in moved})
    # Last, timed now: a deadline counts from the commit, not from the batch's start
    # (the reactions before may have taken seconds).
    await timers.write(conn)
    return outcomes, outbox_rows


_STORE_TRACE = (
    update(tables.saga_state)
    .where(tables.saga_state.c.saga_id == bindparam("saga"))
    .values(traceparent=bindparam("parent"), tracestate=bindparam("vendor"))
)


async def store_trace(conn: AsyncConnection, carriers: dict[str, tuple[str, str]]) -> None:
    """Store, beside each saga's state, the trace context of the span that moved it there
    (`engine.tracing`: a deadline or a deferred answer given in that state continues it)."""
    if carriers:
        await conn.execute(
            _STORE_TRACE,
            [
                {"saga": s, "parent": p or None, "vendor": v or None}
                for s, (p, v) in carriers.items()
            ],
        )


def inbox_row(env: Envelope, delivery: Delivery, now: float) -> dict[str, Any]:
    """The `saga_inbox` row recording that `env` was taken in (the dedupe key)."""
    return {
        "event_id": env.id,
        "source": env.source,
        "event_type": env.type,
        "saga_id": env.saga_id,
        "received_at": now,
        "log_partition": delivery.partition,
        "log_offset": delivery.offset,
    }


def log_not_allowed(service: str, env: Envelope, state: str) -> None:
    """Say that `service` skipped `env`, not allowed in its saga's `state`."""
    log.info(
        "%s: skipped %s %s for saga %s: not allowed in state %s",
        service,
        env.type,
        env.id,
        env.saga_id,
        state,
    )


def skip_row(
    env: Envelope, delivery: Delivery, state: str | None, reason: str, now: float
) -> dict[str, Any]:
    """The `saga_skipped` row recording that `env` was not applied (`reason`)."""
    return {
        "event_id": env.id,
        "event_type": env.type,
        "saga_id": env.saga_id,
        "state": state,
        "reason": reason,
        "at": now,
        "log_partition": delivery.partition,
        "log_offset": delivery.offset,
    }
