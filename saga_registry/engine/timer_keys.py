"""Moving the pending timers of older databases to their stable keys.

Older versions kept each pending deadline timer under the deadline's index in the
registry's list (`saga_timers`), so a registry that reordered or inserted deadlines made a
timer fire the wrong deadline. Timers now live in `saga_deadline_timers` under
`Deadline.key`. At start, a service moves any rows of the old table there, naming each by
the deadline its index and state point at in the registry it starts with (the registry the
rows were armed under, as long as the deadlines were not reordered in the same deploy),
and drops the old table.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy.exc
from sqlalchemy import insert, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import tables
from saga_registry.engine.database import Database
from saga_registry.registry.model import Registry

log = logging.getLogger("saga.timers")

OLD_TABLE = "saga_timers"

_ATTEMPTS = 6
"""Tries at moving the timers before an error is raised."""
_RETRY_S = 0.1
"""Seconds before the first retry; each later one waits longer."""


def old_key(index: int) -> str:
    """The key of a moved timer whose index names no deadline of its state: no deadline
    has it, so it is dropped unfired when due, as the old engine did."""
    return f"#{index}"


async def has_old_timers(conn: AsyncConnection) -> bool:
    """Whether the database still has the index-keyed timer table."""
    return await conn.run_sync(lambda c: inspect(c).has_table(OLD_TABLE))


async def move_index_timers(db: Database, registry: Registry) -> int:
    """Move the rows of the old index-keyed timer table of `db` to the keyed one, under
    the keys `registry` gives their index and state, and drop the old table; returns how
    many rows moved (0, and nothing done, when there is no old table). Replicas of a
    service starting together on one database move the rows once."""
    for attempt in range(1, _ATTEMPTS):
        try:
            return await _move(db, registry)
        except sqlalchemy.exc.DBAPIError:
            # Another replica moving them at the same time: the database refused one of
            # the two (a deadlock, a duplicate row, a busy file, the table dropped under
            # it). Rolled back, this one tries again and finds the table gone once the
            # other has committed.
            await asyncio.sleep(_RETRY_S * attempt)
    return await _move(db, registry)  # an error that stays is raised


async def _move(db: Database, registry: Registry) -> int:
    deadlines = registry.state_machine.deadlines
    async with db.transaction() as conn:
        if not await has_old_timers(conn):
            return 0
        if conn.dialect.name == "postgresql":
            # Replicas wait here for the first to finish (then find no table) instead of
            # deadlocking over the rows each inserts and the table each drops.
            await conn.execute(text(f"LOCK TABLE {OLD_TABLE} IN ACCESS EXCLUSIVE MODE"))
        query = text(f"SELECT saga_id, deadline, state, due_at FROM {OLD_TABLE}")
        old = (await conn.execute(query)).all()
        rows = []
        for saga_id, index, state, due_at in old:
            known = 0 <= index < len(deadlines) and deadlines[index].state == state
            rows.append(
                {
                    "saga_id": saga_id,
                    "deadline": deadlines[index].key if known else old_key(index),
                    "state": state,
                    "due_at": due_at,
                    "within_s": None,
                }
            )
        if rows:
            await conn.execute(insert(tables.timers), rows)
        await conn.execute(text(f"DROP TABLE {OLD_TABLE}"))
    if rows:
        log.info("moved %d pending timer(s) of %s to their deadlines' names", len(rows), db.where)
    return len(rows)
