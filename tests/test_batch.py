"""A poll batch in one transaction (`saga_registry.engine.batch`) keeps every guarantee of one
transaction per delivery: dedupe, skips, outbox order, and a failing or crashing delivery
neither loses nor repeats the others."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.envelope import Envelope
from tests.runtime_kit import Crash, Harness, event, fresh_registry, publish, scripted


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    b = EmbeddedBus(tmp_path / "bus.db")
    await b.start()
    yield b
    await b.stop()


async def _inventory(bus: Bus, db_url: str) -> Harness:
    registry = fresh_registry()
    await bus.ensure_topics(
        [
            TopicSpec(registry.events_topic.name, registry.events_topic.partitions),
            TopicSpec(registry.dead_letter_topic.name, 1),
        ]
    )
    h = Harness(registry, scripted("Inventory"), bus, db_url)
    await h.start()
    return h


def _count_transactions(h: Harness) -> list[int]:
    """Count the transactions the runner opens from now on."""
    assert h.db is not None
    db, real, count = h.db, h.db.transaction, [0]

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        count[0] += 1
        async with real() as conn:
            yield conn

    db.transaction = counted  # type: ignore[method-assign]
    return count


async def _outbox(h: Harness) -> list[tuple[str, str]]:
    rows = await h.rows(select(tables.outbox.c.key, tables.outbox.c.headers))
    return [(r.key.decode(), dict(r.headers)["ce_type"]) for r in rows]


async def test_a_batch_is_one_transaction_with_dedupe_skips_and_order(
    bus: Bus, db_url: str
) -> None:
    h = await _inventory(bus, db_url)
    a, b = event("OrderCreated", "a"), event("OrderCreated", "b")
    (env_a,) = await publish(bus, h.registry, a)
    # b; a second OrderCreated for a (a client's retry: not allowed once placed); an
    # event outside Inventory's projection (passed unread); a copy of a's first event.
    await publish(bus, h.registry, b, event("OrderCreated", "a"), event("PaymentSucceeded", "a"))
    await bus.publish([env_a.to_record(h.registry.events_topic.name)])  # a duplicate
    batch = await h.fetch(5)
    transactions = _count_transactions(h)
    assert h.runner is not None
    await h.runner.handle_batch(batch)
    assert transactions[0] == 1, "the whole batch in one transaction"
    assert await h.calls() == 2
    assert sorted(await _outbox(h)) == [("a", "InventoryReserved"), ("b", "InventoryReserved")]
    states = dict(await h.rows(select(tables.saga_state.c.saga_id, tables.saga_state.c.state)))
    assert states == {"a": "placed", "b": "placed"}
    reasons = sorted(r.reason for r in await h.rows(select(tables.skipped.c.reason)))
    assert reasons == ["duplicate", "not_allowed"]
    m = h.runner.metrics
    assert (m.get("applied"), m.get("duplicate"), m.get("skipped"), m.get("unneeded")) == (
        2,
        1,
        1,
        1,
    )
    assert len(await h.rows(select(tables.inbox))) == 3, "the passed event left no row"
    # The database's mark, in the same transaction: past the whole batch, the passed
    # event included, before any offset is committed.
    marks = await h.rows(select(tables.positions.c.log_partition, tables.positions.c.next_offset))
    ends: dict[int, int] = {}
    for d in batch:
        ends[d.partition] = max(ends.get(d.partition, 0), d.offset + 1)
    assert dict(marks) == ends
    await h.crash()


async def test_a_failing_reaction_in_a_batch_loses_and_repeats_nothing(
    bus: Bus, db_url: str
) -> None:
    h = await _inventory(bus, db_url)
    h.service.fail_sagas.add("bad")
    await publish(
        bus,
        h.registry,
        event("OrderCreated", "good1"),
        event("OrderCreated", "bad"),
        event("OrderCreated", "good2"),
    )
    batch = await h.fetch(3)
    assert h.runner is not None
    await h.runner.handle_batch(batch)
    assert sorted(await _outbox(h)) == [
        ("good1", "InventoryReserved"),
        ("good2", "InventoryReserved"),
    ], "each good delivery applied exactly once"
    assert await h.calls() == 2, "the failed attempts' writes were rolled back"
    dead = [
        Envelope.from_record(d.record)
        for d in await bus.read_all(h.registry.dead_letter_topic.name)
    ]
    assert [e.saga_id for e in dead] == ["bad"]
    parked = await h.rows(select(tables.parked.c.saga_id))
    assert [r.saga_id for r in parked] == ["bad"]
    await h.crash()


async def test_a_crash_mid_batch_commits_nothing_and_the_retry_applies_once(
    bus: Bus, db_url: str
) -> None:
    h = await _inventory(bus, db_url)
    h.service.crash.add("OrderCreated")
    await publish(bus, h.registry, event("OrderCreated", "x1"), event("OrderCreated", "x2"))
    batch = await h.fetch(2)
    assert h.runner is not None
    with pytest.raises(Crash):
        await h.runner.handle_batch(batch)
    await h.crash()
    h.service.crash.clear()
    await h.start()
    assert await h.calls() == 0 and await _outbox(h) == [], "nothing of the batch committed"
    again = await h.fetch(2)
    assert h.runner is not None
    await h.runner.handle_batch(again)
    assert sorted(await _outbox(h)) == [("x1", "InventoryReserved"), ("x2", "InventoryReserved")]
    await h.crash()
