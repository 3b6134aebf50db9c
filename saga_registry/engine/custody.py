"""Whether a service's database is the one its consumer group's position on the bus was
reached with, checked before the service consumes anything.

The bus remembers how far a group has read (its committed offsets); the database holds
what handling those records did. If the database is emptied, replaced, restored from an
older copy, or is not the one a sibling replica uses, the two disagree, and consuming on
would act on a state that forgot earlier events (decline a customer whose charge it no
longer knows, refund nothing). So each database carries an identity, stored with every
offset its service commits, and a high-water mark per partition, written before the
offset is committed; at start both are compared with the bus, and a mismatch refuses the
start with one line. `adopt` is the way to accept a database on purpose.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import rows, tables
from saga_registry.engine.bus import Bus, Delivery, Owner, next_offsets
from saga_registry.engine.database import Database, damage
from saga_registry.engine.errors import DatabaseDamaged, DatabaseMismatch, DatabaseUnavailable
from saga_registry.registry.model import Registry

log = logging.getLogger("saga.custody")


def group_name(registry: Registry, service: str) -> str:
    """The consumer group `service` reads the events topic in."""
    return f"{registry.name}.{service}"


async def claim(db: Database, bus: Bus, service: str, group: str, topic: str) -> Owner:
    """`_claim`, with the database's own failures as one-line errors."""
    try:
        return await _claim(db, bus, service, group, topic)
    except DBAPIError as exc:
        why = damage(exc)
        if why is not None:
            raise DatabaseDamaged(f"database {_where(db)} of {service} is damaged: {why}") from None
        raise DatabaseUnavailable(
            f"cannot read database {_where(db)} of {service}: {exc}"
        ) from None


async def _claim(db: Database, bus: Bus, service: str, group: str, topic: str) -> Owner:
    """This database as the owner of `group`'s offsets, after checking it against them.

    A database with no identity gets one if it has handled nothing and the group has
    committed nothing (a new service), or if it holds handled events (made by a version
    that kept no identity: its marks are taken from the bus). Raises `DatabaseMismatch`
    when the database is empty but the group has consumed, when the bus's offsets were
    committed by another database, or when the database is behind the bus."""
    committed = await bus.committed(group, topic)
    where = _where(db)
    async with db.transaction() as conn:
        await _lock_identity(conn)
        row = (await conn.execute(select(tables.identity))).first()
        marks: dict[int, int] = {
            r.log_partition: r.next_offset
            for r in await conn.execute(
                select(tables.positions).where(tables.positions.c.topic == topic)
            )
        }
        if row is None:
            handled = await conn.scalar(select(func.count()).select_from(tables.inbox))
            if not handled and committed:
                partition, (offset, _) = max(committed.items(), key=lambda kv: kv[1][0])
                raise DatabaseMismatch(
                    f"database {where} of {service} is empty, but group {group!r} has "
                    f"already consumed {topic} (partition {partition} up to offset {offset}):"
                    " it was emptied, replaced or lost; refusing to act on a state that"
                    f" forgot those events (to start from it on purpose: saga db adopt {service})"
                )
            identity = str(uuid.uuid4())
            await conn.execute(
                insert(tables.identity).values(
                    id=identity, service=service, created_at=time.time(), accepts=None
                )
            )
            await rows.raise_marks(conn, {(topic, p): o for p, (o, _) in committed.items()})
            if handled:
                log.info("%s: database %s had no identity; it is now %s", service, where, identity)
            return Owner(identity)
    owner = Owner(row.id, row.accepts)
    strangers = owner.strangers(o for _, o in committed.values())
    if strangers:
        raise DatabaseMismatch(
            f"database {where} of {service} (identity {owner.id}) is not the one group "
            f"{group!r} consumed {topic} with (offsets committed by {', '.join(strangers)}):"
            " another replica's own database (replicas of a service must share one database),"
            " or a copy from before another database was adopted; if this database is meant"
            f" to take over, say so: saga db adopt {service}"
        )
    behind = [
        (p, marks.get(p, 0), o) for p, (o, _) in sorted(committed.items()) if marks.get(p, 0) < o
    ]
    if behind:
        p, mark, offset = behind[0]
        raise DatabaseMismatch(
            f"database {where} of {service} is behind the bus: partition {p} of {topic} is"
            f" handled up to offset {mark} here but {offset} on the bus (restored from an"
            f" older copy, or writes lost); to start from it on purpose: saga db adopt {service}"
        )
    return owner


async def adopt(db: Database, bus: Bus, service: str, group: str, topic: str) -> str:
    """Make this database the group's on purpose, whatever it holds; its identity.

    Its marks become the group's offsets, and the owner the bus carries is accepted until
    the service's own commits replace it. Events before those offsets are not read again:
    what the database forgot stays forgotten (sagas in flight may then wait for their
    deadlines or be skipped as not allowed)."""
    committed = await bus.committed(group, topic)
    owners = sorted({o for _, o in committed.values() if o})
    async with db.transaction() as conn:
        await _lock_identity(conn)
        identity = await conn.scalar(select(tables.identity.c.id))
        if identity is None:
            identity = str(uuid.uuid4())
            await conn.execute(
                insert(tables.identity).values(
                    id=identity, service=service, created_at=time.time(), accepts=None
                )
            )
        foreign = [o for o in owners if o != identity]
        await conn.execute(update(tables.identity).values(accepts=foreign[-1] if foreign else None))
        await conn.execute(delete(tables.positions).where(tables.positions.c.topic == topic))
        await rows.raise_marks(conn, {(topic, p): o for p, (o, _) in committed.items()})
    return str(identity)


async def record_positions(db: Database, deliveries: Sequence[Delivery]) -> None:
    """Raise this database's marks past `deliveries` (before their offsets are committed)."""
    nexts = next_offsets(deliveries)
    if not nexts:
        return
    async with db.transaction() as conn:
        await rows.raise_marks(conn, nexts)


async def _lock_identity(conn: AsyncConnection) -> None:
    """Hold the database's write lock for the rest of the transaction, before the identity
    is read: processes starting together on a new database (a service and a CLI command)
    would otherwise each find none and each write its own."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("LOCK TABLE saga_identity IN EXCLUSIVE MODE")
    else:
        # SQLite has no table lock; any write takes the database's, even one that
        # changes nothing (Python's sqlite3 opens the transaction at the first write).
        await conn.exec_driver_sql("UPDATE saga_identity SET accepts = accepts")


def _where(db: Database) -> str:
    return db.where
