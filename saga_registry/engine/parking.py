"""Parked sagas: after an event of a saga failed every retry in a service and went to the
dead-letter topic, the saga is parked there, so its later events follow it to the
dead-letter topic in order; replaying them resumes it.

The parked row names the event the saga waits for (its head); every later event that was
dead-lettered because the saga is parked is noted behind it, in order (`hold`). A replayed
copy of the head applies; the next noted event then becomes the head, and the saga stays
parked until the replayed copy of the last one has applied. So an event the service took
in while a replay was already on its way (the service lagged: the event sat on the log
before the copy) is not left behind: it waits, parked, for its own replay, and so does
every live event after it, in order."""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Integer, String, Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import tables
from saga_registry.engine.bus import Delivery
from saga_registry.engine.database import Database
from saga_registry.engine.deadletter import REPLAYED, one_line
from saga_registry.engine.envelope import Envelope

held = Table(
    "saga_parked_held",
    tables.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("saga_id", String(256), nullable=False, index=True),
    Column("event_id", String(128), nullable=False),
    Column("at", Float, nullable=False),
)
"""The events dead-lettered behind a parked saga's head, in the order they came (`id`)."""


class Parked(Exception):
    """The saga is parked here after an earlier failure; this event waits behind it."""

    def __str__(self) -> str:
        return "saga parked after an earlier failure of this service; replay it first"


async def is_parked(conn: AsyncConnection, env: Envelope, delivery: Delivery) -> bool:
    """Whether `env`'s saga is parked (in `conn`'s transaction). A replayed copy of the
    event it waits for is not: it applies, and the saga then waits for the next event held
    behind it, or is no longer parked if none is (undone with `conn`'s transaction if the
    event fails again)."""
    head = await conn.scalar(
        select(tables.parked.c.event_id).where(tables.parked.c.saga_id == env.saga_id)
    )
    if head is None:
        return False
    if not (delivery.record.header(REPLAYED) and head == env.id):
        return True
    following = (
        await conn.execute(
            select(held.c.id, held.c.event_id)
            .where(held.c.saga_id == env.saga_id)
            .order_by(held.c.id)
            .limit(1)
        )
    ).first()
    if following is None:
        await conn.execute(delete(tables.parked).where(tables.parked.c.saga_id == env.saga_id))
    else:
        await conn.execute(
            update(tables.parked)
            .where(tables.parked.c.saga_id == env.saga_id)
            .values(
                event_id=following.event_id,
                error=f"waits for the replay of {following.event_id}, dead-lettered "
                "while the saga was parked",
                at=time.time(),
            )
        )
        await conn.execute(delete(held).where(held.c.id == following.id))
    return False


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


async def hold(db: Database, env: Envelope) -> None:
    """Note, in a transaction of its own, that `env` was dead-lettered because its saga is
    parked: the saga stays parked until `env`'s replayed copy has applied too. Idempotent
    (a redelivered event is noted once)."""
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
            await conn.execute(
                insert(held).values(saga_id=env.saga_id, event_id=env.id, at=time.time())
            )
