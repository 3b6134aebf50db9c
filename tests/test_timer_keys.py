"""Timers kept by their deadline's stable key: the rows an older version kept by index
are moved at start (once, however many replicas start together) and then fire their own
deadline, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
)

from saga_registry.engine import tables
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.runner import ServiceRunner
from saga_registry.engine.timer_keys import OLD_TABLE, move_index_timers, old_key
from saga_registry.engine.timers import DeadlineTimers
from saga_registry.registry import load_registry
from tests.helpers import TRIP
from tests.test_saga_run import make_project, start

# -- timers kept by their deadline's key --------------------------------------------------

_OLD_METADATA = MetaData()
_OLD_TIMERS = Table(
    OLD_TABLE,
    _OLD_METADATA,
    Column("saga_id", String(256), primary_key=True),
    Column("deadline", Integer, primary_key=True),
    Column("state", String(64), nullable=False),
    Column("due_at", Float, nullable=False),
    Index("ix_saga_timers_due", "due_at"),
)
"""The index-keyed timer table as older versions made it."""

_ARMED = [
    ("s1", 0, "requested"),  # deadline 1: requested.FlightBookingFailed
    ("s2", 1, "car_rented"),  # deadline 2: car_rented.PaymentDeclined
    ("s3", 1, "requested"),  # deadline 2 is not one of `requested`: stale
    ("s4", 7, "requested"),  # no deadline 8: stale
]


async def _old_database(url: Any, armed: list[tuple[str, int, str]], due_at: float) -> Database:
    """A started database of the current schema that still has the old timer table, with
    `armed` timers in it and each saga in its timer's state."""
    db = Database(url)
    await db.start()
    async with db.transaction() as conn:
        await conn.run_sync(_OLD_METADATA.create_all)
        for saga_id, index, state in armed:
            await conn.execute(
                insert(_OLD_TIMERS).values(
                    saga_id=saga_id, deadline=index, state=state, due_at=due_at
                )
            )
            await conn.execute(
                insert(tables.saga_state).values(saga_id=saga_id, state=state, updated_at=due_at)
            )
    return db


async def _timers(db: Database) -> set[tuple[str, str, str, float, float | None]]:
    async with db.transaction() as conn:
        rows = (await conn.execute(select(tables.timers))).all()
    return {(r.saga_id, r.deadline, r.state, r.due_at, r.within_s) for r in rows}


async def _has_old_table(db: Database) -> bool:
    async with db.transaction() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table(OLD_TABLE)))


async def _outbox(db: Database) -> list[tuple[str, str]]:
    """(saga id, event type) of each queued event."""
    async with db.transaction() as conn:
        rows = (await conn.execute(select(tables.outbox))).all()
    return sorted((r.key.decode(), dict(r.headers)["ce_type"]) for r in rows)


def _flights() -> Any:
    import trip_booking.flights

    return trip_booking.flights.Flights()


async def test_index_keyed_timers_move_to_their_keys_and_fire_their_own_deadline(
    db_url: str, tmp_path: Path
) -> None:
    import trip_booking.events

    registry = load_registry(TRIP)
    url = database_url(db_url, f"flights_{uuid.uuid4().hex[:8]}")
    due = time.time() - 5
    db = await _old_database(url, _ARMED, due)
    try:
        assert await move_index_timers(db, registry) == 4
        assert await _timers(db) == {
            ("s1", "requested.FlightBookingFailed", "requested", due, None),
            ("s2", "car_rented.PaymentDeclined", "car_rented", due, None),
            ("s3", old_key(1), "requested", due, None),
            ("s4", old_key(7), "requested", due, None),
        }
        assert not await _has_old_table(db)
        moved = await _timers(db)
        assert await move_index_timers(db, registry) == 0, "a second start has none to move"
        assert await _timers(db) == moved

        # The next deploy reorders the deadlines: each timer still fires its own.
        first, second = registry.state_machine.deadlines
        assert first.emit == "FlightBookingFailed" and second.emit == "PaymentDeclined"
        reordered = dataclasses.replace(
            registry,
            state_machine=dataclasses.replace(registry.state_machine, deadlines=(second, first)),
        )
        runner = ServiceRunner(
            reordered, _flights(), trip_booking.events.EVENT_TYPES, db, EmbeddedBus(tmp_path / "b")
        )
        assert await DeadlineTimers(runner).fire_due(now=time.time()) == 2
        assert await _outbox(db) == [("s1", "FlightBookingFailed"), ("s2", "PaymentDeclined")]
        assert await _timers(db) == set(), "the stale timers are dropped unfired"
    finally:
        await db.stop()


def test_saga_run_moves_old_timers_at_start_and_fires_them(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    registry = load_registry(root / "registry" / "saga.yaml")
    (root / "dbs").mkdir()
    url = database_url(f"sqlite:///{root}/dbs/{{service}}.db", "Flights")

    async def arm() -> None:
        db = await _old_database(url, [("s1", 0, "requested"), ("s4", 7, "requested")], 1.0)
        await db.stop()

    asyncio.run(arm())
    proc = start(root, "Flights", bus=f"embedded:{tmp_path / 'bus.db'}")
    try:
        end = time.monotonic() + 60
        fired: list[tuple[str, str]] = []
        while time.monotonic() < end and not fired:
            assert proc.poll() is None, proc.communicate()[1]
            with sqlite3.connect(root / "dbs" / "flights.db", timeout=30) as conn:
                fired = [
                    (key.decode(), dict(json.loads(headers))["ce_type"])
                    for key, headers in conn.execute("SELECT key, headers FROM saga_outbox")
                ]
            time.sleep(0.2)
        assert fired == [("s1", "FlightBookingFailed")]
        with sqlite3.connect(root / "dbs" / "flights.db", timeout=30) as conn:
            tables_now = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
            left = conn.execute("SELECT saga_id FROM saga_deadline_timers").fetchall()
        assert OLD_TABLE not in tables_now and "saga_deadline_timers" in tables_now
        assert left == [], "the stale timer is dropped, not fired"
        assert registry.state_machine.deadlines[0].emit == "FlightBookingFailed"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


async def test_replicas_starting_together_move_the_timers_once(db_url: str) -> None:
    registry = load_registry(TRIP)
    # A few rounds: the replicas' transactions collide in a different way each time.
    for _ in range(4):
        url = database_url(db_url, f"flights_{uuid.uuid4().hex[:8]}")
        db = await _old_database(url, _ARMED, 1.0)
        others = [Database(url) for _ in range(3)]
        for other in others:
            await other.start()
        try:
            moved = await asyncio.gather(*(move_index_timers(d, registry) for d in [db, *others]))
            assert sorted(moved) == [0, 0, 0, 4]
            assert {row[:2] for row in await _timers(db)} == {
                ("s1", "requested.FlightBookingFailed"),
                ("s2", "car_rented.PaymentDeclined"),
                ("s3", old_key(1)),
                ("s4", old_key(7)),
            }
            assert not await _has_old_table(db)
        finally:
            for d in [db, *others]:
                await d.stop()
