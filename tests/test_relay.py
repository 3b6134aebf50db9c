"""The outbox relay publishes what a transaction queued as soon as it is handed over,
polls for the rows nobody handed over, and publishes each row once whichever way it
came."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.relay import OutboxRelay

TOPIC = "relay.events"


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    b = EmbeddedBus(tmp_path / "bus.db")
    await b.start()
    await b.ensure_topics([TopicSpec(TOPIC, 1)])
    yield b
    await b.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = Database(database_url(f"sqlite:///{tmp_path}/{{service}}.db", "relay"), None)
    await d.start()
    yield d
    await d.stop()


async def _queue(db: Database, count: int) -> list[dict[str, Any]]:
    """Commit `count` outbox rows, as a reaction's transaction would."""
    rows = [
        {
            "event_id": str(uuid.uuid4()),
            "topic": TOPIC,
            "key": f"saga-{i}".encode(),
            "headers": [["ce_type", "Thing"]],
            "value": b"{}",
            "created_at": time.time(),
            "sent_at": None,
        }
        for i in range(count)
    ]
    async with db.transaction() as conn:
        await conn.execute(insert(tables.outbox), rows)
    return rows


async def _published(bus: Bus) -> list[bytes]:
    return [d.record.key for d in await bus.read_all(TOPIC)]


async def _unsent(db: Database) -> int:
    async with db.transaction() as conn:
        rows = await conn.execute(
            select(tables.outbox.c.id).where(tables.outbox.c.sent_at.is_(None))
        )
        return len(rows.all())


async def _until(check: Any, timeout_s: float) -> float:
    """Seconds until `check()` is true; fails after `timeout_s`."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout_s, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_rows_handed_over_are_published_at_once_without_a_poll(
    bus: Bus, db: Database
) -> None:
    # A poll a minute away: only the hand-over can publish them in time.
    relay = OutboxRelay(db, bus, idle_poll_s=3)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.05)  # its first poll is done: the next is 3 s away
    rows = await _queue(db, 3)
    relay.committed(rows)

    async def three() -> bool:
        return len(await _published(bus)) == 3

    assert await _until(three, 5) < 1.5, "published at once, not by the next poll"
    assert await _published(bus) == [b"saga-0", b"saga-1", b"saga-2"], "in commit order"

    async def marked() -> bool:
        return await _unsent(db) == 0

    await _until(marked, 5)
    stop.set()
    await running


async def test_rows_nobody_handed_over_are_published_by_the_poll(bus: Bus, db: Database) -> None:
    relay = OutboxRelay(db, bus, idle_poll_s=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.1)
    await _queue(db, 1)  # written by another process: never handed over here

    async def one() -> bool:
        return len(await _published(bus)) == 1

    await _until(one, 5)
    stop.set()
    await running
    assert await _unsent(db) == 0, "marked sent by the stop at the latest"


async def test_a_row_polled_and_handed_over_is_published_once(bus: Bus, db: Database) -> None:
    rows = await _queue(db, 2)
    relay = OutboxRelay(db, bus, idle_poll_s=3)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))  # its first poll takes both rows

    async def two() -> bool:
        return len(await _published(bus)) == 2

    await _until(two, 5)
    relay.committed(rows)  # then their writer hands them over: claimed already
    await asyncio.sleep(0.3)
    stop.set()
    await running
    assert await _published(bus) == [b"saga-0", b"saga-1"]
    assert await _unsent(db) == 0


async def test_without_a_running_relay_rows_wait_for_a_poll(bus: Bus, db: Database) -> None:
    relay = OutboxRelay(db, bus)  # not running: a process that only starts sagas
    rows = await _queue(db, 1)
    relay.committed(rows)
    assert await _published(bus) == [], "left to the service's relay"
    assert await relay.relay_once() == 1, "a drain (saga start) publishes it"
    await relay.flush()
    assert await _published(bus) == [b"saga-0"]
    assert await _unsent(db) == 0


async def test_rows_published_while_a_mark_runs_are_marked_too(bus: Bus, db: Database) -> None:
    real = db.transaction

    @contextlib.asynccontextmanager
    async def slow() -> AsyncIterator[Any]:
        async with real() as conn:
            yield conn
            await asyncio.sleep(0.3)  # a slow commit: the first mark is still running

    relay = OutboxRelay(db, bus, idle_poll_s=3)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.05)
    first, second = await _queue(db, 2)
    db.transaction = slow  # type: ignore[method-assign]
    relay.committed([first])
    await asyncio.sleep(0.2)  # published; its mark has begun
    relay.committed([second])  # published while that mark runs

    async def marked() -> bool:
        return await _unsent(db) == 0

    await _until(marked, 3)
    stop.set()
    await running


async def test_a_poll_that_read_a_row_before_its_mark_committed_does_not_publish_it_again(
    db: Database, bus: Bus
) -> None:
    """The mark of published rows may commit while a poll's read of the outbox is still
    closing (another connection of the pool, on PostgreSQL): the poll saw the row unsent,
    and by the time it filters, the mark has released the row's claim."""
    relay = OutboxRelay(db, bus)
    await _queue(db, 1)
    assert await relay.relay_once() == 1  # published, claimed, not marked yet
    assert relay._marking is not None
    relay._marking.cancel()  # the mark is made to run at the worst moment instead
    plain = db.transaction
    raced = False

    @contextlib.asynccontextmanager
    async def racing() -> AsyncIterator[Any]:
        nonlocal raced
        async with plain() as conn:
            yield conn
        if not raced:
            raced = True
            await relay.flush()  # the mark commits and releases the claim

    db.transaction = racing  # type: ignore[method-assign]
    try:
        assert await relay.relay_once() == 0
    finally:
        db.transaction = plain  # type: ignore[method-assign]
    assert raced and len(await _published(bus)) == 1
    assert await _unsent(db) == 0
