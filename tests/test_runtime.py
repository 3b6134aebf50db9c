"""The runtime's guarantees, each on both buses and both databases: one test body,
parametrised. Each test fails if the mechanism it names is removed."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from sqlalchemy import select

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus
from saga_registry.engine.deadletter import DeadLetter, replay_record
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import ForbiddenEmit
from saga_registry.engine.relay import OutboxRelay
from saga_registry.engine.timers import DeadlineTimers
from tests.runtime_kit import Crash, Harness, event, fresh_registry, publish, scripted


async def harness(bus: Bus, db_url: str, service: str, **kw: Any) -> Harness:
    registry = kw.pop("registry", None) or fresh_registry()
    await bus.ensure_topics([_spec(registry.events_topic), _spec(registry.dead_letter_topic)])
    h = Harness(registry, scripted(service), bus, db_url)
    await h.start()
    return h


def _spec(topic: Any) -> Any:
    from saga_registry.engine.bus import TopicSpec

    return TopicSpec(topic.name, topic.partitions)


async def state_of(h: Harness, saga: str) -> str | None:
    return await h.scalar(
        select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == saga)
    )


async def outbox_types(h: Harness) -> list[str]:
    rows = await h.rows(select(tables.outbox.c.headers).order_by(tables.outbox.c.id))
    return [dict(r.headers)["ce_type"] for r in rows]


async def test_duplicate_delivery_changes_nothing(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Inventory")
    (env,) = await publish(bus, h.registry, event("OrderCreated", "o1"))
    await bus.publish([env.to_record(h.registry.events_topic.name)])  # the same event again
    assert await h.consume(2) == ["applied", "duplicate"]
    assert await h.calls() == 1
    assert await outbox_types(h) == ["InventoryReserved"]
    assert await state_of(h, "o1") == "placed"
    skipped = await h.rows(select(tables.skipped.c.reason, tables.skipped.c.event_id))
    assert [(r.reason, r.event_id) for r in skipped] == [("duplicate", env.id)]
    await h.crash()


async def test_crash_after_commit_before_publish_loses_nothing(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Inventory")
    (created,) = await publish(bus, h.registry, event("OrderCreated", "o2"))
    assert await h.consume(1) == ["applied"]
    topic = h.registry.events_topic.name
    assert len(await bus.read_all(topic)) == 1, "nothing is published before the relay runs"
    await h.crash()  # the process dies: the reaction committed, the relay never ran
    await h.start()
    assert h.db is not None
    relay = OutboxRelay(h.db, bus)
    assert await relay.relay_once() == 1
    await relay.flush()
    assert await OutboxRelay(h.db, bus).relay_once() == 0, "a relayed row is marked sent"
    records = [Envelope.from_record(d.record) for d in await bus.read_all(topic)]
    reserved = [e for e in records if e.type == "InventoryReserved"]
    assert len(reserved) == 1
    assert reserved[0].causation_id == created.id
    assert reserved[0].correlation_id == created.correlation_id
    assert reserved[0].saga_id == "o2"
    await h.crash()


async def test_crash_before_commit_redelivers_and_applies_once(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Inventory")
    h.service.crash.add("OrderCreated")
    (created,) = await publish(bus, h.registry, event("OrderCreated", "o3"))
    (delivery,) = await h.fetch(1)
    assert h.runner is not None
    with pytest.raises(Crash):
        await h.runner.handle(delivery)  # dies mid-transaction, offset not committed
    await h.crash()
    h.service.crash.clear()
    await h.start()
    (again,) = await h.fetch(1)
    assert Envelope.from_record(again.record).id == created.id, "the event is delivered again"
    assert h.runner is not None
    assert await h.runner.handle(again) == "applied"
    assert await h.calls() == 1, "the crashed attempt's writes were rolled back"
    assert await outbox_types(h) == ["InventoryReserved"]
    await h.crash()


async def test_poison_record_goes_to_dead_letter_and_next_is_processed(
    bus: Bus, db_url: str
) -> None:
    from saga_registry.engine.bus import Record

    h = await harness(bus, db_url, "Inventory")
    topic = h.registry.events_topic.name
    good = Envelope.new(
        type="OrderCreated", source="t", saga_id="o4", data=event("OrderCreated", "o4").to_json()
    )
    wrong_type = Envelope.new(type="Nonsense", source="t", saga_id="o4", data=b"{}")
    bad_payload = Envelope.new(
        type="OrderCreated", source="t", saga_id="o4", data=b'{"order_id": "o4", "total": "lots"}'
    )
    await bus.publish(
        [
            Record(topic, b"o4", b"\x00\xffnot json at all", ()),
            wrong_type.to_record(topic),
            bad_payload.to_record(topic),
            good.to_record(topic),
        ]
    )
    assert await h.consume(4) == ["dead", "dead", "dead", "applied"]
    dead = [DeadLetter.of(d) for d in await bus.read_all(h.registry.dead_letter_topic.name)]
    assert [d.error_type for d in dead] == ["BadEnvelope"] * 3
    assert "missing CloudEvents header" in dead[0].error
    assert "unknown event type 'Nonsense'" in dead[1].error
    assert "invalid OrderCreated payload" in dead[2].error
    assert all(d.service == "Inventory" for d in dead)
    assert await state_of(h, "o4") == "placed"
    await h.crash()


async def test_oversized_record_is_dead_lettered_unread_with_its_start_kept(
    bus: Bus, db_url: str
) -> None:
    import dataclasses

    h = await harness(bus, db_url, "Inventory")
    assert h.runner is not None
    h.runner.settings = dataclasses.replace(h.runner.settings, max_record_bytes=20_000)
    topic = h.registry.events_topic.name
    # A valid event, only far too large: the runner must not read it, and its dead-letter
    # copy must stay small enough for the broker to take.
    huge = event("OrderCreated", "o9").model_copy(update={"customer_id": "x" * 200_000})
    env = Envelope.new(type="OrderCreated", source="t", saga_id="o9", data=huge.to_json())
    good = Envelope.new(
        type="OrderCreated", source="t", saga_id="o10", data=event("OrderCreated", "o10").to_json()
    )
    await bus.publish([env.to_record(topic), good.to_record(topic)])
    # As a poll batch (the fast path must hand it to the one-by-one path, unread).
    batch = await h.fetch(2)
    await h.runner.handle_batch(batch)
    assert h.runner.metrics.get("dead_lettered", "Inventory") == 1
    (dead,) = await bus.read_all(h.registry.dead_letter_topic.name)
    letter = DeadLetter.of(dead)
    assert "exceeds the limit of 20000" in letter.error and letter.event_id == env.id
    assert len(dead.record.value) == 64 << 10
    assert dead.record.header("saga_truncated") == str(len(huge.to_json())).encode()
    assert await state_of(h, "o9") is None and await state_of(h, "o10") == "placed"
    await h.crash()


async def test_an_event_too_large_for_consumers_is_refused_before_commit(
    bus: Bus, db_url: str
) -> None:
    h = await harness(bus, db_url, "OMS")
    assert h.runner is not None
    h.runner.settings = dataclasses.replace(h.runner.settings, max_record_bytes=20_000)
    order = event("OrderCreated", "o11")
    big = order.model_copy(update={"items": order.items * 1000})
    with pytest.raises(ForbiddenEmit, match=r"OrderCreated for saga o11 of \d+ bytes, over"):
        await h.runner.initiate(big)
    assert await h.rows(select(tables.outbox)) == []
    await h.runner.initiate(order)
    assert len(await h.rows(select(tables.outbox))) == 1
    await h.crash()


async def test_late_event_does_not_change_state(bus: Bus, db_url: str) -> None:
    # A client retries the order after it was cancelled: the second OrderCreated (a new
    # event id) arrives late. Payment passes the events outside its projection unread.
    h = await harness(bus, db_url, "Payment")
    await publish(
        bus,
        h.registry,
        event("OrderCreated", "o5"),
        event("InventoryReservationFailed", "o5"),
        event("OrderCancelled", "o5"),
    )
    (late,) = await publish(bus, h.registry, event("OrderCreated", "o5"))
    assert await h.consume(4) == ["applied", "unneeded", "unneeded", "skipped"]
    assert await state_of(h, "o5") == "placed"
    assert await h.calls() == 0
    skipped = await h.rows(select(tables.skipped))
    assert [(r.event_id, r.reason, r.state) for r in skipped] == [
        (late.id, "not_allowed", "placed")
    ]
    await h.crash()


async def test_without_projections_every_event_is_judged_on_the_whole_machine(
    bus: Bus, db_url: str
) -> None:
    # A producer outside the engine emits both of a reaction's events: with projections
    # off (`saga.projections: false`) every service sees every event, and the second is
    # refused wherever it arrives.
    registry = dataclasses.replace(fresh_registry(), projections=False)
    h = await harness(bus, db_url, "Payment", registry=registry)
    await publish(
        bus,
        h.registry,
        event("OrderCreated", "o5"),
        event("InventoryReservationFailed", "o5"),
        event("OrderCancelled", "o5"),
    )
    (late,) = await publish(bus, h.registry, event("InventoryReserved", "o5"))
    assert await h.consume(4) == ["applied", "applied", "applied", "skipped"]
    assert await state_of(h, "o5") == "cancelled"
    assert await h.calls() == 0, "Payment must not charge a cancelled order"
    skipped = await h.rows(select(tables.skipped))
    assert [(r.event_id, r.reason, r.state) for r in skipped] == [
        (late.id, "not_allowed", "cancelled")
    ]
    await h.crash()


async def test_event_before_its_saga_started_is_skipped(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Payment")
    await publish(bus, h.registry, event("InventoryReserved", "o6"))
    assert await h.consume(1) == ["skipped"]
    assert await state_of(h, "o6") is None
    assert await h.calls() == 0
    await h.crash()


async def test_deadline_fires_after_a_restart(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Logistics")
    h.service.emit_override = lambda saga: None  # the provider will answer later
    await publish(
        bus,
        h.registry,
        event("OrderCreated", "o7"),
        event("InventoryReserved", "o7"),
        event("PaymentSucceeded", "o7"),
    )
    assert await h.consume(3) == ["applied", "unneeded", "applied"]
    assert await state_of(h, "o7") == "paid"
    assert await outbox_types(h) == []
    await h.crash()
    await h.start()  # restart: the timer is in the database, not in memory
    assert h.runner is not None
    timers = DeadlineTimers(h.runner)
    assert await timers.fire_due(now=time.time()) == 0, "not due yet"
    assert await timers.fire_due(now=time.time() + 61) == 1
    assert await outbox_types(h) == ["DeliveryFailed"]
    (raw,) = await h.rows(select(tables.outbox.c.value))
    assert b'"reason":"timeout"' in raw.value and b'"order_id":"o7"' in raw.value
    assert await timers.fire_due(now=time.time() + 120) == 0, "a deadline fires once"
    await h.crash()


async def test_no_deadline_when_the_reaction_answers_at_once(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Logistics")
    await publish(
        bus,
        h.registry,
        event("OrderCreated", "o12"),
        event("InventoryReserved", "o12"),
        event("PaymentSucceeded", "o12"),
    )
    assert await h.consume(3) == ["applied", "unneeded", "applied"]
    assert h.runner is not None
    assert await DeadlineTimers(h.runner).fire_due(now=time.time() + 61) == 0
    assert await outbox_types(h) == ["DeliveryScheduled"]
    await h.crash()


async def test_deadline_does_not_fire_once_the_saga_moved_on(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Logistics")
    await publish(
        bus,
        h.registry,
        event("OrderCreated", "o8"),
        event("InventoryReserved", "o8"),
        event("PaymentSucceeded", "o8"),
        event("DeliveryScheduled", "o8"),
    )
    assert await h.consume(4) == ["applied", "unneeded", "applied", "applied"]
    assert await state_of(h, "o8") == "completed"
    assert h.runner is not None
    assert await DeadlineTimers(h.runner).fire_due(now=time.time() + 61) == 0
    assert await outbox_types(h) == ["DeliveryScheduled"]
    await h.crash()


async def test_failing_reaction_is_retried_then_parked_and_replayed(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Inventory")
    h.service.fail_sagas.add("o9")
    envs = await publish(
        bus,
        h.registry,
        event("OrderCreated", "o9"),
        event("PaymentFailed", "o9"),
        event("OrderCreated", "o10"),
    )
    assert h.runner is not None
    outcomes = {}
    for d in await h.fetch(3):
        env = Envelope.from_record(d.record)
        outcomes[(env.saga_id, env.type)] = await h.runner.handle(d)
    assert outcomes == {
        ("o9", "OrderCreated"): "dead",
        ("o9", "PaymentFailed"): "dead",
        ("o10", "OrderCreated"): "applied",
    }, "o9 parked; o10 unaffected"
    assert await h.calls() == 1, "only o10's reaction committed"
    dead = [DeadLetter.of(d) for d in await bus.read_all(h.registry.dead_letter_topic.name)]
    assert [(d.event_id, d.attempts) for d in dead] == [(envs[0].id, 3), (envs[1].id, 0)]
    assert dead[0].error_type == "ValueError" and "scripted failure" in dead[0].error
    assert "parked" in dead[1].error
    # The bug is fixed: replay puts both back, in order, and they apply.
    h.service.fail_sagas.clear()
    topic = h.registry.events_topic.name
    await bus.publish(
        [
            replay_record(d.record, topic)
            for d in await bus.read_all(h.registry.dead_letter_topic.name)
        ]
    )
    assert await h.consume(2) == ["applied", "applied"]
    assert await state_of(h, "o9") == "payment_failed"
    await h.crash()


async def test_reaction_emitting_a_forbidden_event_is_refused(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Inventory")
    h.service.emit_override = lambda saga: event("PaymentSucceeded", saga)
    await publish(bus, h.registry, event("OrderCreated", "o11"))
    assert await h.consume(1) == ["dead"]
    assert await outbox_types(h) == []
    (dead,) = [DeadLetter.of(d) for d in await bus.read_all(h.registry.dead_letter_topic.name)]
    assert dead.error_type == "ForbiddenEmit"
    assert "emitted PaymentSucceeded; the registry allows InventoryReserved" in dead.error
    await h.crash()


async def test_deferred_answer_and_deadline_never_both_count(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Logistics")
    h.service.emit_override = lambda saga: None  # both sagas wait for the provider
    await publish(
        bus,
        h.registry,
        *(
            event(k, s)
            for s in ("a1", "a2")
            for k in ("OrderCreated", "InventoryReserved", "PaymentSucceeded")
        ),
    )
    assert await h.consume(6) == ["applied", "unneeded", "applied"] * 2
    assert h.runner is not None
    # a1: the provider answers in time; a second answer is refused; the deadline is off.
    await h.runner.initiate(event("DeliveryScheduled", "a1"))
    with pytest.raises(ForbiddenEmit, match="too late"):
        await h.runner.initiate(event("DeliveryScheduled", "a1"))
    # a2: the deadline fires first; the provider's late answer is refused.
    timers = DeadlineTimers(h.runner)
    assert await timers.fire_due(now=time.time() + 61) == 1
    with pytest.raises(ForbiddenEmit, match="too late"):
        await h.runner.initiate(event("DeliveryScheduled", "a2"))
    sent = await h.rows(
        select(tables.outbox.c.headers, tables.outbox.c.key).order_by(tables.outbox.c.id)
    )
    assert [(dict(r.headers)["ce_type"], r.key) for r in sent] == [
        ("DeliveryScheduled", b"a1"),
        ("DeliveryFailed", b"a2"),
    ]
    await h.crash()


async def test_same_id_from_another_source_is_not_a_duplicate(bus: Bus, db_url: str) -> None:
    h = await harness(bus, db_url, "Inventory")
    topic = h.registry.events_topic.name
    first = Envelope(
        id="42",
        type="OrderCreated",
        source="shop-eu",
        saga_id="x1",
        data=event("OrderCreated", "x1").to_json(),
        time="",
        correlation_id="42",
    )
    other = Envelope(
        id="42",
        type="OrderCreated",
        source="shop-us",
        saga_id="x2",
        data=event("OrderCreated", "x2").to_json(),
        time="",
        correlation_id="42",
    )
    await bus.publish([first.to_record(topic), other.to_record(topic), first.to_record(topic)])
    outcomes = sorted(await h.consume(3))
    assert outcomes == ["applied", "applied", "duplicate"]
    assert await h.calls() == 2
    await h.crash()


async def test_database_outage_is_not_a_reaction_failure(bus: Bus, db_url: str) -> None:
    from sqlalchemy.exc import OperationalError

    h = await harness(bus, db_url, "Inventory")
    await publish(bus, h.registry, event("OrderCreated", "x3"))
    (delivery,) = await h.fetch(1)
    assert h.runner is not None
    outage = OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    async def broken(event: Any, ctx: Any) -> Any:
        raise outage

    real = h.runner._handlers["OrderCreated"]
    h.runner._handlers["OrderCreated"] = broken
    with pytest.raises(OperationalError):
        await h.runner.handle(delivery)  # up to the consumer loop, which resubscribes
    assert await bus.read_all(h.registry.dead_letter_topic.name) == []
    h.runner._handlers["OrderCreated"] = real
    assert await h.runner.handle(delivery) == "applied", "not parked by the outage"
    await h.crash()


async def test_a_service_that_takes_no_event_in_does_not_consume(bus: Bus, db_url: str) -> None:
    # Cart reacts to nothing and follows nothing: its projection is empty, so it neither
    # fetches the topic nor joins a consumer group (it would only pass every record).
    h = await harness(bus, db_url, "Cart")
    runner = h.runner
    assert runner is not None and runner.machine.projection.events == set()
    await h.crash()  # the harness's own subscription is not the runner's loop
    await h.start()
    runner = h.runner
    assert runner is not None
    await publish(bus, h.registry, event("OrderCreated", "c1"))
    stop = asyncio.Event()
    loop = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(2.5)  # past the 1 s a passed batch may wait to be committed
    assert not loop.done()
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert await bus.committed(runner.group, runner.topic) == {}
    assert await h.rows(select(tables.inbox)) == []
    await h.crash()
