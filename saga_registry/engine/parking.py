"""Parked sagas: after an event of a saga failed every retry in a service and went to the
dead-letter topic, the saga is parked there, so its later events follow it to the
dead-letter topic in order; replaying the failed event resumes it."""

from __future__ import annotations

import time

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import tables
from saga_registry.engine.bus import Delivery
from saga_registry.engine.database import Database
from saga_registry.engine.deadletter import REPLAYED, one_line
from saga_registry.engine.envelope import Envelope


class Parked(Exception):
    """The saga is parked here after an earlier failure; this event waits behind it."""

    def __str__(self) -> str:
        return "saga parked after an earlier failure of this service; replay it first"


async def is_parked(conn: AsyncConnection, env: Envelope, delivery: Delivery) -> bool:
    """Whether `env`'s saga is parked (in `conn`'s transaction). The replayed event that
    parked it un-parks it instead."""
    row = (
        await conn.execute(
            select(tables.parked.c.event_id).where(tables.parked.c.saga_id == env.saga_id)
        )
    ).first()
    if row is None:
        return False
    if delivery.record.header(REPLAYED) and row.event_id == env.id:
        # The event that parked the saga is back from the dead-letter topic: resume.
        await conn.execute(delete(tables.parked).where(tables.parked.c.saga_id == env.saga_id))
        return False
    return True


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
