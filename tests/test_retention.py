"""Retention (`saga_registry.engine.retention`): each service prunes what it no longer
needs and nothing else; a duplicate older than the dedupe window is still not applied
twice; the embedded log never drops a record a group has not committed past; Kafka topics
are created with their retention."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orders.events as ev
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import func, insert, select

from saga_registry.engine import tables
from saga_registry.engine.app import Application, RunningService
from saga_registry.engine.bus import Record, TopicSpec
from saga_registry.engine.buses import EmbeddedBus, KafkaBus
from saga_registry.engine.config import Settings
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.relay import OutboxRelay
from saga_registry.engine.retention import (
    RetentionSettings,
    ServicePruner,
    ensure_topics,
    parse_duration,
)
from saga_registry.engine.runner import ServiceRunner
from saga_registry.engine.timers import DeadlineTimers
from tests.runtime_kit import FAST, Harness, event, fresh_registry, publish, scripted

WINDOW = 3600.0
TERMINAL = frozenset({"completed", "cancelled"})


async def _count(db: Database, table: Any, *where: Any) -> int:
    async with db.transaction() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def _ids(db: Database, column: Any) -> set[Any]:
    async with db.transaction() as conn:
        return set((await conn.execute(select(column))).scalars())


async def test_a_pass_deletes_what_ended_sagas_left_and_nothing_else(db_url: str) -> None:
    db = Database(database_url(db_url, f"ret_{uuid.uuid4().hex[:8]}"))
    await db.start()
    now = time.time()
    old, recent = now - WINDOW - 10, now - 10
    states = {"ended": "cancelled", "live": "placed", "done": "completed", "parked": "placed"}
    inbox = [
        # (event id, saga, received_at)
        ("e-ended-old", "ended", old),
        ("e-ended-recent", "ended", recent),
        ("e-done-old", "done", old),
        ("e-live-old", "live", old),
        ("e-orphan-old", "never-began", old),
        ("e-parked-old", "parked-orphan", old),
    ]
    try:
        async with db.transaction() as conn:
            for saga, state in states.items():
                await conn.execute(
                    insert(tables.saga_state).values(saga_id=saga, state=state, updated_at=old)
                )
            await conn.execute(
                insert(tables.parked).values(
                    saga_id="parked-orphan", event_id="x", error="e", at=old
                )
            )
            for event_id, saga, at in inbox:
                await conn.execute(
                    insert(tables.inbox).values(
                        event_id=event_id, source="t", event_type="T", saga_id=saga, received_at=at
                    )
                )
                await conn.execute(
                    insert(tables.skipped).values(
                        event_id=event_id, event_type="T", saga_id=saga, reason="r", at=at
                    )
                )
            for event_id, sent_at in [("sent-old", old), ("sent-recent", recent), ("unsent", None)]:
                await conn.execute(
                    insert(tables.outbox).values(
                        event_id=event_id,
                        topic="t",
                        key=b"k",
                        headers=[],
                        value=b"v",
                        created_at=old,
                        sent_at=sent_at,
                    )
                )
            for saga in ("ended", "live", "done"):
                await conn.execute(
                    insert(tables.timers).values(
                        saga_id=saga, deadline="x.Y", state="x", due_at=now + 9
                    )
                )
        # chunk=2: every table needs several chunks, so the chunk loop is exercised too.
        settings = RetentionSettings(dedupe_window_s=WINDOW, sent_outbox_s=60.0, chunk=2)
        pruned = await ServicePruner("svc", db, TERMINAL, settings).prune_once(now)

        kept = {"e-ended-recent", "e-live-old", "e-parked-old"}
        assert await _ids(db, tables.inbox.c.event_id) == kept
        assert await _ids(db, tables.skipped.c.event_id) == kept
        assert await _ids(db, tables.outbox.c.event_id) == {"sent-recent", "unsent"}
        assert await _ids(db, tables.timers.c.saga_id) == {"live"}
        # The ended sagas' state rows stay: they are what refuses an old duplicate.
        assert await _ids(db, tables.saga_state.c.saga_id) == set(states)
        assert (pruned.inbox, pruned.skipped, pruned.outbox, pruned.timers) == (3, 3, 1, 2)
        # A second pass finds nothing more.
        assert (await ServicePruner("svc", db, TERMINAL, settings).prune_once(now)).total == 0
    finally:
        await db.stop()


async def test_rows_of_events_the_state_no_longer_allows_go_in_flight_too(
    db_url: str,
) -> None:
    # With its projection, a service knows which events a stored state still allows: a
    # row of any other event recognises nothing the state does not, even mid-saga.
    db = Database(database_url(db_url, f"ret_{uuid.uuid4().hex[:8]}"))
    await db.start()
    now = time.time()
    old = now - WINDOW - 10
    try:
        async with db.transaction() as conn:
            await conn.execute(
                insert(tables.saga_state).values(saga_id="s", state="waiting", updated_at=old)
            )
            for event_id, kind in [("took-me-here", "Begun"), ("may-come-again", "Retry")]:
                await conn.execute(
                    insert(tables.inbox).values(
                        event_id=event_id, source="t", event_type=kind, saga_id="s", received_at=old
                    )
                )
        applies = {"waiting": frozenset({"Retry", "Done"}), "ended": frozenset()}
        settings = RetentionSettings(dedupe_window_s=WINDOW)
        pruned = await ServicePruner("svc", db, TERMINAL, settings, applies).prune_once(now)
        assert pruned.inbox == 1
        assert await _ids(db, tables.inbox.c.event_id) == {"may-come-again"}
    finally:
        await db.stop()


async def test_a_duplicate_older_than_the_window_is_refused_by_its_saga_state(
    db_url: str, tmp_path: Path
) -> None:
    reg = fresh_registry()
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    h = Harness(reg, scripted("Inventory"), bus, db_url)
    runner = await h.start()
    try:
        ended = await publish(
            bus,
            reg,
            event("OrderCreated", "s-ended"),
            event("InventoryReservationFailed", "s-ended"),
            event("OrderCancelled", "s-ended"),
        )
        live = await publish(bus, reg, event("OrderCreated", "s-live"))
        # Inventory takes in the OrderCreated events; the others are outside its projection.
        assert await h.consume(4) == ["applied", "unneeded", "unneeded", "applied"]
        assert await h.calls() == 2  # Inventory reacts to each OrderCreated
        settings = RetentionSettings(dedupe_window_s=WINDOW)
        young = await ServicePruner.of(runner, settings).prune_once(time.time())
        assert young.inbox == 0, "nothing younger than the window goes"
        pruned = await ServicePruner.of(runner, settings).prune_once(time.time() + WINDOW + 1)
        # Both sagas stored 'placed', which no longer allows OrderCreated: the rows go.
        assert pruned.inbox == 2

        # Copies of both sagas' first events come again, long after the window.
        await bus.publish([ended[0].to_record(reg.events_topic.name)])
        await bus.publish([live[0].to_record(reg.events_topic.name)])
        batch = await h.fetch(2)
        outcomes = {d.record.key.decode(): await runner.handle(d) for d in batch}
        assert h.sub is not None
        await h.sub.commit(batch)

        # No inbox row recognises them, but their sagas' states do not allow them: refused
        # by the state machine, and no reaction is run again.
        assert outcomes == {"s-ended": "skipped", "s-live": "skipped"}
        assert await h.calls() == 2
        skipped = await h.rows(
            select(tables.skipped.c.reason, tables.skipped.c.state).where(
                tables.skipped.c.event_id == ended[0].id
            )
        )
        assert [tuple(r) for r in skipped] == [("not_allowed", "placed")]
    finally:
        await h.crash()
        await bus.stop()


async def _offsets(bus: EmbeddedBus, topic: str, partition: int) -> list[int]:
    return [d.offset for d in await bus.read_all(topic) if d.partition == partition]


async def test_the_embedded_log_keeps_what_a_group_has_not_committed(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    try:
        await bus.ensure_topics([TopicSpec("ev", 2), TopicSpec("dlq", 1)])
        # Keys for each partition of "ev".
        keys = {
            p: next(k for k in (f"k{i}".encode() for i in range(99)) if _part(k) == p)
            for p in (0, 1)
        }
        await bus.publish([Record("ev", keys[0], b"v") for _ in range(10)])
        await bus.publish([Record("ev", keys[1], b"v") for _ in range(3)])
        await bus.publish([Record("dlq", b"k", b"v") for _ in range(3)])
        fast = await bus.subscribe("fast", ["ev"])
        slow = await bus.subscribe("slow", ["ev"])
        got = await fast.fetch(100)
        await fast.commit(got)  # past everything
        slow_got = await slow.fetch(100)
        await slow.commit([d for d in slow_got if d.partition == 0 and d.offset < 4])
        later = time.time() + 10

        # Too young: nothing goes, whoever has read it.
        assert await bus.prune(60.0, now=later) == 0
        deleted = await bus.prune(1.0, per_topic={"dlq": 3600.0}, now=later)
        # Partition 0: only what "slow" committed past; partition 1: "slow" has no offset
        # there (it counts as 0), so nothing; the dead-letter topic is younger than its
        # own retention.
        assert deleted == 4
        assert await _offsets(bus, "ev", 0) == list(range(4, 10))
        assert await _offsets(bus, "ev", 1) == [0, 1, 2]
        assert await _offsets(bus, "dlq", 0) == [0, 1, 2]

        await slow.commit(slow_got)
        await bus.prune(1.0, per_topic={"dlq": 1.0}, now=later)
        # The last record of each partition stays: the next offset counts from it.
        assert await _offsets(bus, "ev", 0) == [9]
        assert await _offsets(bus, "ev", 1) == [2]
        assert await _offsets(bus, "dlq", 0) == [2]  # no group: age alone decides
        await bus.publish([Record("ev", keys[0], b"new")])
        assert await _offsets(bus, "ev", 0) == [9, 10]
        new = await fast.fetch(100)
        assert [(d.offset, d.record.value) for d in new] == [(10, b"new")]
    finally:
        await bus.stop()


async def test_a_log_prune_pass_ends_after_its_chunk_once_told_to_stop(tmp_path: Path) -> None:
    """Stopping a service must not wait for a long pass: it ends between two chunks."""
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    try:
        await bus.publish([Record("ev", b"k", b"v") for _ in range(10)])
        stop = asyncio.Event()
        stop.set()
        later = time.time() + 10
        assert await bus.prune(1.0, now=later, chunk=2, stop=stop) == 2
        assert await bus.prune(1.0, now=later, chunk=2) == 7  # the last record stays
    finally:
        await bus.stop()


def _part(key: bytes) -> int:
    from saga_registry.engine.buses.embedded import partition_for

    return partition_for(key, 2)


async def test_kafka_topics_are_created_with_their_retention(kafka_bootstrap: str) -> None:
    reg = fresh_registry()
    bus = KafkaBus(kafka_bootstrap)
    await bus.start()
    settings = RetentionSettings(log_retention_s=2 * 3600, dead_letter_retention_s=30 * 86400)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await ensure_topics(bus, reg, settings)
        names = [reg.events_topic.name, reg.dead_letter_topic.name]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, None) for n in names]
        )
        found: dict[tuple[str, str], str] = {}
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] in ("retention.ms", "segment.ms"):
                        found[(resource[3], entry[0])] = entry[1]
        day_ms = str(86400 * 1000)
        assert found == {
            (names[0], "retention.ms"): str(2 * 3600 * 1000),
            (names[0], "segment.ms"): str(2 * 3600 * 1000),
            # Dead letters are kept a month; their segments roll daily.
            (names[1], "retention.ms"): str(30 * 86400 * 1000),
            (names[1], "segment.ms"): day_ms,
        }
    finally:
        await admin.close()
        await bus.stop()


async def test_a_running_application_prunes_on_its_schedule(tmp_path: Path) -> None:
    """The prune tasks start with the services: with zero windows, once the saga has
    ended, the running application empties the service's inbox and the log."""
    reg = fresh_registry()
    bus = EmbeddedBus(tmp_path / "bus.db")
    settings = Settings(
        db=f"sqlite:///{tmp_path}/{{service}}.db",
        retention=RetentionSettings(
            dedupe_window_s=0, sent_outbox_s=0, log_retention_s=0, every_s=0.1
        ),
    )
    app = Application(settings, registry=reg, bus=bus)
    await bus.start()
    await ensure_topics(bus, reg, settings.retention)
    service = scripted("OrderHistory")  # reacts to every event, emits nothing
    db = Database(database_url(settings.db, "orderhistory"), service.metadata)
    await db.start()
    runner = ServiceRunner(reg, service, ev.EVENT_TYPES, db, bus, settings=FAST)
    app.services.append(
        RunningService(service, runner, OutboxRelay(db, bus), DeadlineTimers(runner), db)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        kinds = ("OrderCreated", "InventoryReserved", "PaymentSucceeded", "DeliveryScheduled")
        await publish(bus, reg, *(event(k, "s1") for k in kinds))
        inbox = calls = left = -1
        for _ in range(100):
            await asyncio.sleep(0.1)
            calls = int(await _scalar(db, select(func.count()).select_from(service.calls)) or 0)
            inbox = await _count(db, tables.inbox)
            left = len(await bus.read_all(reg.events_topic.name))
            if calls == 4 and inbox == 0 and left == 1:
                break
        # Every event was handled, then its inbox row and its record pruned (but the
        # last record of the saga's partition, which the next offset counts from).
        assert (calls, inbox, left) == (4, 0, 1)
        state = await _scalar(db, select(tables.saga_state.c.state))
        assert state == "completed"  # kept: it refuses an old duplicate
    finally:
        stop.set()
        await task
        await app.stop()


async def _scalar(db: Database, stmt: Any) -> Any:
    async with db.transaction() as conn:
        return await conn.scalar(stmt)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("60s", 60.0), ("30m", 1800.0), ("7d", 604800.0)]
)
def test_durations_read_with_their_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_one_line_naming_the_option(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from saga_registry.cli.main import main as cli

    result = CliRunner().invoke(cli, ["run", "--dedupe-window", "a week"])
    assert result.exit_code == 2
    assert "--dedupe-window" in result.output and "'a week' is not a duration" in result.output
    assert "Traceback" not in result.output
