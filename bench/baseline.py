"""The bare transport's ceiling: a relay chain with the happy path's hops and nothing else.

Each relay of the happy path (Inventory, Payment, Logistics) becomes a bare hop: consume
the topic in its own group, take the records of the event it reacts to, re-key each by
its saga id, produce the next event's record (CloudEvents headers, a fresh `ce_id`, the
payload carried over), wait for the bus to hold it durably, commit the offsets. A final
consumer (OrderHistory's place) counts the last event. No database, no validation, no
state machine: what is left is what the bus itself costs.

The layout mirrors the engine's: one topic with the registry's partitions, keyed by saga
id. On Kafka each hop is its own OS process (the engine's services are), talking to the
broker with aiokafka directly, with the producer settings of `KafkaBus` (idempotent,
acks=all, linger 5 ms). On the embedded log the hops are tasks in one process sharing one
`EmbeddedBus`, as the engine's services are in `saga run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.scenario import HappyPath, Orders
from saga_registry.engine.bus import Record, TopicSpec
from saga_registry.engine.buses.embedded import EmbeddedBus
from saga_registry.engine.envelope import Envelope

BATCH = 500
"""Records per fetch and per publish, as the engine's runner and relay use."""


@dataclass(frozen=True, slots=True)
class BaselineResult:
    """Measured sagas and the time from the first start record to the last end record."""

    sagas: int
    seconds: float

    @property
    def sagas_per_s(self) -> float:
        """Sagas through the whole chain per second."""
        return self.sagas / self.seconds


def _start_records(topic: str, first: str, ids: Sequence[str]) -> list[Record]:
    orders = Orders(seed=11)
    return [
        Envelope.new(
            type=first, source="bench/baseline", saga_id=i, data=orders.make(i).to_json()
        ).to_record(topic)
        for i in ids
    ]


def _next_record(record: Record, event_type: str) -> Record:
    """The next hop's record: same key and payload, new `ce_type` and `ce_id`."""
    headers = tuple(
        (k, event_type.encode())
        if k == "ce_type"
        else (k, str(uuid.uuid4()).encode())
        if k == "ce_id"
        else (k, v)
        for k, v in record.headers
    )
    return Record(record.topic, record.key, record.value, headers)


class _Ends:
    """Counts end records; `reached(n)` waits for the n-th and gives the time it came."""

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0
        self._changed = asyncio.Event()

    def add(self, n: int) -> None:
        if n:
            self.count += n
            self.last_at = time.time()
            self._changed.set()

    async def reached(self, n: int, timeout_s: float, check: Callable[[], None]) -> float:
        deadline = time.monotonic() + timeout_s
        while self.count < n:
            check()
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"baseline: {self.count} of {n} end records within {timeout_s:g} s"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)
        return self.last_at


async def _measure(
    publish: Callable[[list[Record]], Awaitable[None]],
    ends: _Ends,
    topic: str,
    path: HappyPath,
    sagas: int,
    warmup: int,
    timeout_s: float,
    check: Callable[[], None],
) -> BaselineResult:
    warm = _start_records(topic, path.events[0], [f"bw-{i:06d}" for i in range(warmup)])
    for i in range(0, len(warm), BATCH):
        await publish(warm[i : i + BATCH])
    await ends.reached(warmup, timeout_s, check)
    records = _start_records(topic, path.events[0], [f"b-{i:07d}" for i in range(sagas)])
    started = time.time()
    for i in range(0, len(records), BATCH):
        await publish(records[i : i + BATCH])
    finished = await ends.reached(warmup + sagas, timeout_s, check)
    return BaselineResult(sagas, finished - started)


# --- embedded log ---------------------------------------------------------------------


async def run_embedded(
    db_path: Path,
    topic: str,
    partitions: int,
    path: HappyPath,
    sagas: int,
    warmup: int,
    timeout_s: float,
) -> BaselineResult:
    """The chain on one `EmbeddedBus` at `db_path`, every hop a task of this process."""
    bus = EmbeddedBus(db_path)
    await bus.start()
    stop = asyncio.Event()
    ends = _Ends()
    tasks: list[asyncio.Task[None]] = []
    try:
        await bus.ensure_topics([TopicSpec(topic, partitions)])
        for relay, got, emit in path.relay_steps:
            tasks.append(asyncio.create_task(_embedded_hop(bus, topic, relay, got, emit, stop)))
        tasks.append(asyncio.create_task(_embedded_sink(bus, topic, path.events[-1], ends, stop)))

        def check() -> None:
            for task in tasks:
                if task.done():
                    raise BenchError(f"baseline hop stopped: {task.exception()!r}")

        return await _measure(bus.publish, ends, topic, path, sagas, warmup, timeout_s, check)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.stop()


async def _embedded_hop(
    bus: EmbeddedBus, topic: str, group: str, got: str, emit: str, stop: asyncio.Event
) -> None:
    sub = await bus.subscribe(group, [topic])
    while not stop.is_set():
        batch = await sub.fetch(BATCH, 0.05)
        if batch:
            out = [
                _next_record(d.record, emit)
                for d in batch
                if d.record.header("ce_type") == got.encode()
            ]
            await bus.publish(out)
            await sub.commit(batch)
    await sub.close()


async def _embedded_sink(
    bus: EmbeddedBus, topic: str, last: str, ends: _Ends, stop: asyncio.Event
) -> None:
    sub = await bus.subscribe("end", [topic])
    while not stop.is_set():
        batch = await sub.fetch(BATCH, 0.05)
        if batch:
            await sub.commit(batch)
            ends.add(sum(1 for d in batch if d.record.header("ce_type") == last.encode()))
    await sub.close()


# --- Kafka ----------------------------------------------------------------------------


def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )


def _consumer(bootstrap: str, topic: str, group: str) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _kafka_publish(producer: Any, records: Sequence[Record]) -> None:
    futures = [
        await producer.send(r.topic, value=r.value, key=r.key, headers=list(r.headers))
        for r in records
    ]
    await asyncio.gather(*futures)


def _as_record(message: Any) -> Record:
    return Record(message.topic, message.key, message.value, tuple(message.headers))


async def _kafka_hop(bootstrap: str, topic: str, group: str, got: str, emit: str) -> None:
    producer, consumer = _producer(bootstrap), _consumer(bootstrap, topic, group)
    await producer.start()
    await consumer.start()
    wanted = got.encode()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            messages = [m for ms in batches.values() for m in ms]
            if not messages:
                continue
            out = [
                _next_record(_as_record(m), emit)
                for m in messages
                if dict(m.headers).get("ce_type") == wanted
            ]
            await _kafka_publish(producer, out)
            await consumer.commit()  # the positions after this batch: all of it is relayed
    finally:
        await consumer.stop()
        await producer.stop()


def _kafka_hop_process(bootstrap: str, topic: str, group: str, got: str, emit: str) -> None:
    asyncio.run(_kafka_hop(bootstrap, topic, group, got, emit))


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    """Delete a run's topics from the broker (a shared broker would otherwise keep every
    run's partitions: thousands of them slow it down and, in the end, exhaust its memory)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in topics if t in existing]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def run_kafka(
    bootstrap: str,
    topic: str,
    partitions: int,
    path: HappyPath,
    sagas: int,
    warmup: int,
    timeout_s: float,
) -> BaselineResult:
    """The chain on Kafka at `bootstrap`: each hop its own OS process, source and end
    consumer in this one."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    spawn = multiprocessing.get_context("spawn")
    hops = [
        spawn.Process(
            target=_kafka_hop_process,
            args=(bootstrap, topic, f"{topic}.{relay}", got, emit),
            name=f"baseline-{relay}",
            daemon=True,
        )
        for relay, got, emit in path.relay_steps
    ]
    for hop in hops:
        hop.start()
    producer = _producer(bootstrap)
    consumer = _consumer(bootstrap, topic, f"{topic}.end")
    ends = _Ends()
    await producer.start()
    await consumer.start()
    sink = asyncio.create_task(_kafka_sink(consumer, path.events[-1], ends))

    def check() -> None:
        for hop in hops:
            if not hop.is_alive():
                raise BenchError(f"baseline hop {hop.name} exited ({hop.exitcode})")
        if sink.done():
            raise BenchError(f"baseline end consumer stopped: {sink.exception()!r}")

    async def publish(records: list[Record]) -> None:
        await _kafka_publish(producer, records)

    try:
        return await _measure(publish, ends, topic, path, sagas, warmup, timeout_s, check)
    finally:
        sink.cancel()
        await asyncio.gather(sink, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        for hop in hops:
            hop.kill()
            hop.join(10)


async def _kafka_sink(consumer: Any, last: str, ends: _Ends) -> None:
    wanted = last.encode()
    while True:
        batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
        messages = [m for ms in batches.values() for m in ms]
        if messages:
            await consumer.commit()
            ends.add(sum(1 for m in messages if dict(m.headers).get("ce_type") == wanted))
