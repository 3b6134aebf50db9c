"""Parked sagas: after an event of a saga failed every retry in a service and went to the
dead-letter topic, the saga is parked there, so its later events follow it to the
dead-letter topic in order; replaying them resumes it.

The parked row names the event the saga waits for (its head); every later event that was
dead-lettered because the saga is parked is held behind it, in order, with its record
(`hold`). A replayed copy of the head applies; the first held event then becomes the
head, and the saga stays parked until a replayed copy of the last one has applied.

A replay publishes a saga's copies together, and each copy names the events whose copies
follow it (header `saga_replay_then`). An event held behind the saga that no copy brings
(the service took it in while the replay was on its way: it sat on the log before the
copies) is put back by the service itself: when a copy applies, each such event is queued
in the outbox, in order and ahead of what the reaction emits, as a copy for this service.
So a replay while the service lags leaves nothing behind and applies nothing out of
order. All of it happens in the applying copy's transaction: if the event fails again,
nothing moved."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import tables
from saga_registry.engine.bus import Delivery
from saga_registry.engine.database import Database
from saga_registry.engine.deadletter import (
    REPLAY_FOR,
    REPLAYED,
    copy_headers,
    following,
    one_line,
)
from saga_registry.engine.envelope import Envelope

held = tables.parked_held


class Parked(Exception):
    """The saga is parked here after an earlier failure; this event waits behind it."""

    def __str__(self) -> str:
        return "saga parked after an earlier failure of this service; replay it first"


async def is_letter_copy(conn: AsyncConnection, env: Envelope, delivery: Delivery) -> bool:
    """Whether `env` is a plain copy (not a replay) of the event its saga is parked on, or
    of one held behind it: dead-lettered or held already, it waits for `saga dlq replay`,
    and a second letter would only say the same again (a producer may publish an event
    twice: its relay after a crash, `saga start` beside the service's own relay)."""
    if delivery.record.header(REPLAYED):
        return False
    head = await conn.scalar(
        select(tables.parked.c.event_id).where(tables.parked.c.saga_id == env.saga_id)
    )
    if head is None:
        return False
    if head == env.id:
        return True
    found = await conn.scalar(
        select(held.c.id).where(held.c.saga_id == env.saga_id, held.c.event_id == env.id).limit(1)
    )
    return found is not None


async def is_parked(conn: AsyncConnection, env: Envelope, delivery: Delivery) -> bool:
    """Whether `env`'s saga is parked (in `conn`'s transaction). A replayed copy of the
    event it waits for is not: it applies, the saga then waits for the first event held
    behind it (or is no longer parked if none is), and every held event that no copy of
    the same replay brings is queued in the outbox as a copy (see the module's doc)."""
    head = await conn.scalar(
        select(tables.parked.c.event_id).where(tables.parked.c.saga_id == env.saga_id)
    )
    if head is None:
        return False
    if not (delivery.record.header(REPLAYED) and head == env.id):
        return True
    rows = (
        await conn.execute(select(held).where(held.c.saga_id == env.saga_id).order_by(held.c.id))
    ).all()
    if not rows:
        await conn.execute(delete(tables.parked).where(tables.parked.c.saga_id == env.saga_id))
        return False
    await conn.execute(
        update(tables.parked)
        .where(tables.parked.c.saga_id == env.saga_id)
        .values(
            event_id=rows[0].event_id,
            error=f"waits for {rows[0].event_id}, dead-lettered while the saga was parked",
            at=time.time(),
        )
    )
    await conn.execute(delete(held).where(held.c.id == rows[0].id))
    coming = following(delivery.record)
    meant_for = (delivery.record.header(REPLAY_FOR) or b"").decode("utf-8", "replace")
    now = time.time()
    lost = [r for r in rows if not r.requeued and r.event_id not in coming]
    if lost:
        await conn.execute(insert(tables.outbox), [_copy(r, meant_for, now) for r in lost])
        await conn.execute(
            update(held).where(held.c.id.in_([r.id for r in lost])).values(requeued=True)
        )
    return False


def _copy(row: Any, meant_for: str, now: float) -> dict[str, Any]:
    """The outbox row putting held `row` back on its topic as a copy for `meant_for`."""
    headers = [*row.headers, [REPLAYED, "1"], [REPLAY_FOR, meant_for]]
    return {
        "event_id": row.event_id,
        "topic": row.topic,
        "key": row.key,
        "headers": headers,
        "value": row.value,
        "created_at": now,
        "sent_at": None,
    }


async def park(db: Database, env: Envelope, exc: BaseException) -> None:
    """Park `env`'s saga for the failure `exc`, in a transaction of its own (idempotent)."""
    async with db.transaction() as conn:
        exists = await conn.scalar(
            select(tables.parked.c.saga_id).where(tables.parked.c.saga_id == env.saga_id)
        )
        if exists is None:
            await conn.execute(
                insert(tables.parked).values(
                    saga_id=env.saga_id,
                    event_id=env.id,
                    error=one_line(exc)[:2000],
                    at=time.time(),
                )
            )


async def hold(db: Database, env: Envelope, delivery: Delivery) -> None:
    """Hold `env` (the event of `delivery`, just dead-lettered because its saga is parked)
    behind its saga, in a transaction of its own: the saga stays parked until a copy of
    `env` has applied too. Idempotent (a redelivered event is held once)."""
    async with db.transaction() as conn:
        head = await conn.scalar(
            select(tables.parked.c.event_id).where(tables.parked.c.saga_id == env.saga_id)
        )
        if head is None or head == env.id:
            return
        noted = await conn.scalar(
            select(held.c.id).where(held.c.saga_id == env.saga_id, held.c.event_id == env.id)
        )
        if noted is None:
            rec = delivery.record
            await conn.execute(
                insert(held).values(
                    saga_id=env.saga_id,
                    event_id=env.id,
                    at=time.time(),
                    topic=rec.topic,
                    key=rec.key,
                    headers=copy_headers(rec),
                    value=rec.value,
                    requeued=False,
                )
            )
