"""`KafkaBus`: the bus contract on Apache Kafka, through aiokafka.

Every failure to reach or use the broker becomes one `BusUnavailable` line; aiokafka's own
exceptions never leave this module and its siblings (`kafka_client`, `kafka_subscription`,
`kafka_raw`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from saga_registry.engine.bus import Bus, Delivery, Owner, Record, Subscription, TopicSpec
from saga_registry.engine.buses.kafka_client import (
    FAILURES,
    REQUEST_TIMEOUT_MS,
    WAIT_S,
    connect,
    describe,
    quietly_stop,
    ssl_context,
)
from saga_registry.engine.buses.kafka_raw import RawReader, delivery
from saga_registry.engine.buses.kafka_subscription import KafkaSubscription
from saga_registry.engine.errors import BusUnavailable


class KafkaBus(Bus):
    """A bus on the Kafka cluster at `bootstrap` (`host:port[,host:port...]`).

    - `publish` uses an idempotent producer with acks=all and returns when the cluster has
      acknowledged every record; the key picks the partition (Kafka's default partitioner),
      so one key keeps its order. If `publish` is cancelled or fails, some of its records
      may still have been written (at-least-once: publishing again may duplicate them).
    - Topics are created by `ensure_topics` with `min(3, brokers)` replicas and the
      `configs` given (`retention.ms`, `segment.ms`).
    - Subscriptions are plain Kafka consumer groups without auto-commit.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ssl_cafile: str | None = None,
        client_id: str = "saga",
    ) -> None:
        self.bootstrap = bootstrap
        self.security_protocol = security_protocol
        self.sasl_mechanism = sasl_mechanism
        self.sasl_username = sasl_username
        self.sasl_password = sasl_password
        self.ssl_cafile = ssl_cafile
        self.client_id = client_id
        self._producer: Any = None
        self._subscriptions: set[KafkaSubscription] = set()

    def _client_options(self) -> dict[str, Any]:
        """The connection settings every aiokafka client of this bus shares."""
        options: dict[str, Any] = {
            "bootstrap_servers": [h.strip() for h in self.bootstrap.split(",") if h.strip()],
            "client_id": self.client_id,
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl_context(self.ssl_cafile)
        return options

    async def start(self) -> None:
        """Connect the producer; raises `BusUnavailable` within ~15 s if no broker answers."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **self._client_options(), enable_idempotence=True, acks="all", linger_ms=0
        )
        await connect(producer, self.bootstrap)
        self._producer = producer

    async def stop(self) -> None:
        """Close open subscriptions and the producer (flushing it); idempotent."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            await quietly_stop(producer)

    async def ensure_topics(
        self, topics: Sequence[TopicSpec], configs: dict[str, dict[str, str]] | None = None
    ) -> None:
        """Create the missing topics, then wait until every partition has a leader.

        `configs[name]` are topic configs (e.g. `retention.ms`) given to topic `name` when
        it is created here; a topic that exists already keeps its own."""
        admin = AIOKafkaAdminClient(**self._client_options())
        await connect(admin, self.bootstrap)
        try:
            async with asyncio.timeout(WAIT_S):
                existing = set(await admin.list_topics())
                missing = [t for t in topics if t.name not in existing]
                if missing:
                    brokers = len((await admin.describe_cluster())["brokers"])
                    replicas = max(1, min(3, brokers))
                    response = await admin.create_topics(
                        [
                            NewTopic(
                                t.name,
                                t.partitions,
                                replicas,
                                topic_configs=(configs or {}).get(t.name, {}),
                            )
                            for t in missing
                        ]
                    )
                    for topic, code, *_ in response.topic_errors:
                        # Another process may have created it since list_topics: fine.
                        if code not in (0, TopicAlreadyExistsError.errno):
                            raise BusUnavailable(
                                f"cannot create Kafka topic {topic!r}: error code {code}"
                            )
                await _wait_for_leaders(admin, [t.name for t in topics])
        except FAILURES as exc:
            raise BusUnavailable(
                f"cannot create topics on Kafka at {self.bootstrap}: {describe(exc)}"
            ) from exc
        finally:
            await quietly_stop(admin)

    async def publish(self, records: Sequence[Record]) -> None:
        """Send every record, then wait for all acknowledgements (acks=all)."""
        producer = self._started()
        try:
            # send() only enqueues, in order; waiting after the loop lets records batch.
            futures = [
                await producer.send(
                    r.topic, value=r.value, key=r.key, headers=list(r.headers) or None
                )
                for r in records
            ]
        except FAILURES as exc:
            raise BusUnavailable(f"cannot publish to Kafka: {describe(exc)}") from exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise BusUnavailable(f"cannot publish to Kafka: {describe(result)}") from result

    async def subscribe(
        self, group: str, topics: Sequence[str], owner: Owner | None = None
    ) -> Subscription:
        """Join consumer group `group` on `topics` (from the beginning if it is new); the
        owner travels as each committed offset's metadata, and is checked whenever the
        group gives this member partitions (a failover, a rebalance)."""
        self._started()
        consumer = AIOKafkaConsumer(
            *topics,
            **self._client_options(),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await connect(consumer, self.bootstrap, f"join group {group!r} on")
        subscription = KafkaSubscription(
            consumer, group, self._subscriptions, self._client_options(), self.committed, owner
        )
        self._subscriptions.add(subscription)
        return subscription

    async def committed(self, group: str, topic: str) -> dict[int, tuple[int, str]]:
        """The group's committed offsets on `topic`, with the metadata stored with them."""
        admin = AIOKafkaAdminClient(**self._client_options())
        await connect(admin, self.bootstrap)
        try:
            async with asyncio.timeout(WAIT_S):
                offsets = await _group_offsets(admin, group)
        except FAILURES as exc:
            raise BusUnavailable(
                f"cannot read the offsets of group {group!r} on Kafka at {self.bootstrap}: "
                f"{describe(exc)}"
            ) from exc
        finally:
            await quietly_stop(admin)
        return {
            tp.partition: (int(om.offset), om.metadata or "")
            for tp, om in offsets.items()
            if tp.topic == topic and om.offset >= 0
        }

    async def read_all(self, topic: str) -> list[Delivery]:
        """Every record in `topic` up to its end when called, by partition then offset.

        Read raw (`kafka_raw`), so that a record aiokafka could not decode is listed too,
        marked unreadable, instead of making the whole topic unreadable."""
        self._started()
        consumer = AIOKafkaConsumer(**self._client_options(), group_id=None)
        await connect(consumer, self.bootstrap)
        try:
            async with asyncio.timeout(WAIT_S), RawReader(self._client_options()) as reader:
                return await _read_to_end(consumer, self._producer, reader, topic)
        except FAILURES as exc:
            raise BusUnavailable(f"cannot read Kafka topic {topic!r}: {describe(exc)}") from exc
        finally:
            await quietly_stop(consumer)

    def _started(self) -> Any:
        if self._producer is None:
            raise BusUnavailable(f"Kafka bus for {self.bootstrap} is not started")
        return self._producer


async def _read_to_end(
    consumer: Any, producer: Any, reader: RawReader, topic: str
) -> list[Delivery]:
    # Checked first: asking for the partitions of a missing topic would auto-create it.
    if topic not in await consumer.topics():
        return []
    # The producer's call waits for the topic's metadata; the consumer's only reads a cache.
    partitions = [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
    starts = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    return [
        delivery(tp, record)
        for tp in partitions
        for record in await reader.read_range(tp, starts[tp], ends[tp])
    ]


async def _group_offsets(admin: Any, group: str) -> Any:
    """The group's committed offsets; a coordinator still loading or not yet elected (a
    fresh or restarting cluster) is waited for."""
    while True:
        try:
            return await admin.list_consumer_group_offsets(group)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(0.25)


async def _wait_for_leaders(admin: Any, names: list[str]) -> None:
    """Until the cluster metadata shows every topic with a leader for each partition."""
    while names:
        described = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        names = [n for n in names if n not in ready]
        if names:
            await asyncio.sleep(0.1)
