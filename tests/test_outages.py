"""The runner, relay and timers outlive bus outages: a failed publish or commit is retried,
and records handed out but not committed come again, applied once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import orders.events as ev
from sqlalchemy import func, select

from saga_registry.engine.bus import Bus, Delivery, Owner, Record, Subscription, TopicSpec
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.errors import BusUnavailable
from saga_registry.engine.relay import OutboxRelay
from saga_registry.engine.runner import ServiceRunner
from tests.runtime_kit import FAST, event, fresh_registry, publish, scripted


class FlakyBus(Bus):
    """A real embedded bus whose next commit and next publish fail once, as in an outage."""

    def __init__(self, inner: EmbeddedBus) -> None:
        self.inner = inner
        self.fail_commit = 0
        self.fail_publish = 0

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        await self.inner.ensure_topics(topics)

    async def publish(self, records: Sequence[Record]) -> None:
        if self.fail_publish:
            self.fail_publish -= 1
            raise BusUnavailable("broker restarting")
        await self.inner.publish(records)

    async def subscribe(
        self, group: str, topics: Sequence[str], owner: Owner | None = None
    ) -> Subscription:
        return _FlakySubscription(self, await self.inner.subscribe(group, topics, owner))

    async def committed(self, group: str, topic: str) -> dict[int, tuple[int, str]]:
        return await self.inner.committed(group, topic)

    async def read_all(self, topic: str) -> list[Delivery]:
        return await self.inner.read_all(topic)


class _FlakySubscription(Subscription):
    def __init__(self, bus: FlakyBus, inner: Subscription) -> None:
        self.bus, self.inner = bus, inner

    async def fetch(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Delivery]:
        return await self.inner.fetch(max_records, timeout_s)

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        if self.bus.fail_commit:
            self.bus.fail_commit -= 1
            raise BusUnavailable("group coordinator moved")
        await self.inner.commit(deliveries)

    async def close(self) -> None:
        await self.inner.close()

    async def lag(self) -> dict[tuple[str, int], int]:
        return await self.inner.lag()


async def test_runner_and_relay_survive_a_failed_commit_and_publish(tmp_path: Path) -> None:
    registry = fresh_registry()
    bus = FlakyBus(EmbeddedBus(tmp_path / "bus.db"))
    await bus.start()
    service = scripted("Inventory")
    db = Database(
        database_url(f"sqlite:///{tmp_path}/{{service}}.db", "inventory"), service.metadata
    )
    await db.start()
    relay = OutboxRelay(db, bus, idle_poll_s=0.02)
    runner = ServiceRunner(
        registry, service, ev.EVENT_TYPES, db, bus, settings=FAST, on_committed=relay.committed
    )
    await publish(bus, registry, *(event("OrderCreated", f"s{i}") for i in range(20)))
    bus.fail_commit = 1
    bus.fail_publish = 1
    stop = asyncio.Event()
    tasks = [asyncio.create_task(runner.run(stop)), asyncio.create_task(relay.run(stop))]
    topic = registry.events_topic.name
    for _ in range(200):
        records = await bus.read_all(topic)
        relayed = sum(1 for d in records if d.record.header("ce_type") == b"InventoryReserved")
        # The failed commit is found before the next one (it overlaps the next fetch).
        if relayed >= 20 and runner.metrics.get("duplicate") >= 20:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    reserved = [
        d for d in await bus.read_all(topic) if d.record.header("ce_type") == b"InventoryReserved"
    ]
    assert len(reserved) == 20, "every reaction's event was relayed despite the outage"
    assert bus.fail_commit == 0 and bus.fail_publish == 0, "both outages happened"
    assert runner.metrics.get("consumer_errors") == 1
    # The batch whose commit failed came again: 20 duplicates, dropped by the inbox.
    assert runner.metrics.get("duplicate") == 20
    async with db.transaction() as conn:
        calls = await conn.scalar(select(func.count()).select_from(service.calls))
    assert calls == 20, "records delivered again after the failed commit applied once"
    await db.stop()
    await bus.stop()


async def test_kafka_record_with_a_valueless_header_is_readable(kafka_bootstrap: str) -> None:
    import uuid

    from aiokafka import AIOKafkaProducer

    from saga_registry.engine.buses import KafkaBus

    topic = f"t{uuid.uuid4().hex[:10]}.nullheader"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        # Any client may send a header without a value; it must not wedge a consumer.
        await producer.send_and_wait(topic, b"{}", key=b"k", headers=[("x-empty", None)])
    finally:
        await producer.stop()
    async with KafkaBus(kafka_bootstrap) as bus:
        sub = await bus.subscribe(f"g-{topic}", [topic])
        got: list[Delivery] = []
        for _ in range(40):
            got += await sub.fetch(10, 0.5)
            if got:
                break
        await sub.close()
    assert [d.record.header("x-empty") for d in got] == [b""]
