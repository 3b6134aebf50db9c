"""`KafkaBus`: the bus contract on Apache Kafka, through aiokafka.

Every failure to reach or use the broker becomes one `BusUnavailable` line; aiokafka's own
exceptions never leave this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ConsumerStoppedError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import OffsetAndMetadata

from saga_registry.engine.bus import Bus, Delivery, Owner, Record, Subscription, TopicSpec
from saga_registry.engine.buses.kafka_raw import RawReader, delivery
from saga_registry.engine.errors import BusUnavailable, DatabaseMismatch

log = logging.getLogger(__name__)

# Bounds every request, so an unreachable broker is reported in seconds, not minutes.
_REQUEST_TIMEOUT_MS = 10_000
_CONNECT_TIMEOUT_S = 15.0
# How long read_all and ensure_topics wait for the broker before giving up.
_WAIT_S = 30.0
# How long closing one client may take before it is abandoned.
_STOP_S = 2.0
# Errors that mean "the broker cannot be reached or used right now".
_FAILURES = (KafkaError, OSError, asyncio.TimeoutError)


class KafkaBus(Bus):
    """A bus on the Kafka cluster at `bootstrap` (`host:port[,host:port...]`).

    - `publish` uses an idempotent producer with acks=all and returns when the cluster has
      acknowledged every record; the key picks the partition (Kafka's default partitioner),
      so one key keeps its order. If `publish` is cancelled or fails, some of its records
      may still have been written (at-least-once: publishing again may duplicate them).
    - Topics are created by `ensure_topics` with `min(3, brokers)` replicas.
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
        self._subscriptions: set[_KafkaSubscription] = set()

    def _client_options(self) -> dict[str, Any]:
        """The connection settings every aiokafka client of this bus shares."""
        options: dict[str, Any] = {
            "bootstrap_servers": [h.strip() for h in self.bootstrap.split(",") if h.strip()],
            "client_id": self.client_id,
            "request_timeout_ms": _REQUEST_TIMEOUT_MS,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        return options

    async def _connect(self, client: Any, doing: str = "reach") -> None:
        """Start an aiokafka client, or stop it and raise a one-line `BusUnavailable`."""
        with _logged_reasons() as reasons:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                    await client.start()
                return
            except TimeoutError:
                reason = f"no answer within {_CONNECT_TIMEOUT_S:g} s"
            except (*_FAILURES, ValueError) as exc:
                reason = reasons[-1] if reasons else _describe(exc)
        await _quietly_stop(client)
        raise BusUnavailable(f"cannot {doing} Kafka at {self.bootstrap}: {_one_line(reason)}")

    async def start(self) -> None:
        """Connect the producer; raises `BusUnavailable` within ~15 s if no broker answers."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **self._client_options(), enable_idempotence=True, acks="all", linger_ms=5
        )
        await self._connect(producer)
        self._producer = producer

    async def stop(self) -> None:
        """Close open subscriptions and the producer (flushing it); idempotent."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer)

    async def ensure_topics(
        self, topics: Sequence[TopicSpec], configs: dict[str, dict[str, str]] | None = None
    ) -> None:
        """Create the missing topics, then wait until every partition has a leader.

        `configs[name]` are topic configs (e.g. `retention.ms`) given to topic `name` when
        it is created here; a topic that exists already keeps its own."""
        admin = AIOKafkaAdminClient(**self._client_options())
        await self._connect(admin)
        try:
            async with asyncio.timeout(_WAIT_S):
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
        except _FAILURES as exc:
            raise BusUnavailable(
                f"cannot create topics on Kafka at {self.bootstrap}: {_describe(exc)}"
            ) from exc
        finally:
            await _quietly_stop(admin)

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
        except _FAILURES as exc:
            raise BusUnavailable(f"cannot publish to Kafka: {_describe(exc)}") from exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise BusUnavailable(f"cannot publish to Kafka: {_describe(result)}") from result

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
        await self._connect(consumer, f"join group {group!r} on")
        subscription = _KafkaSubscription(
            consumer, group, self._subscriptions, self._client_options(), self, owner
        )
        self._subscriptions.add(subscription)
        return subscription

    async def committed(self, group: str, topic: str) -> dict[int, tuple[int, str]]:
        """The group's committed offsets on `topic`, with the metadata stored with them."""
        admin = AIOKafkaAdminClient(**self._client_options())
        await self._connect(admin)
        try:
            async with asyncio.timeout(_WAIT_S):
                offsets = await admin.list_consumer_group_offsets(group)
        except _FAILURES as exc:
            raise BusUnavailable(
                f"cannot read the offsets of group {group!r} on Kafka at {self.bootstrap}: "
                f"{_describe(exc)}"
            ) from exc
        finally:
            await _quietly_stop(admin)
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
        await self._connect(consumer)
        try:
            async with asyncio.timeout(_WAIT_S), RawReader(self._client_options()) as reader:
                return await _read_to_end(consumer, self._producer, reader, topic)
        except _FAILURES as exc:
            raise BusUnavailable(f"cannot read Kafka topic {topic!r}: {_describe(exc)}") from exc
        finally:
            await _quietly_stop(consumer)

    def _started(self) -> Any:
        if self._producer is None:
            raise BusUnavailable(f"Kafka bus for {self.bootstrap} is not started")
        return self._producer


class _KafkaSubscription(Subscription):
    """One aiokafka consumer in group `group`; commits only when told to."""

    def __init__(
        self,
        consumer: Any,
        group: str,
        registry: set[_KafkaSubscription],
        options: dict[str, Any],
        bus: KafkaBus,
        owner: Owner | None,
    ) -> None:
        self._consumer = consumer
        self._group = group
        self._registry = registry
        self._options = options
        self._bus = bus
        self._owner = owner
        self._checked: set[Any] = set()

    async def fetch(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Delivery]:
        """The next records, grouped by partition, each partition in offset order.

        A record the client cannot decode comes as a delivery marked `unreadable` (after
        the records before it in its partition), so that it can be dead-lettered and
        passed instead of failing every fetch of the group."""
        try:
            batches = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except ConsumerStoppedError as exc:
            raise BusUnavailable(f"subscription of group {self._group!r} is closed") from exc
        except Exception as exc:  # a broker failure, or a record aiokafka cannot decode
            return await self._read_unreadable(exc, max_records)
        await self._check_owners()
        return [_delivery(message) for messages in batches.values() for message in messages]

    async def _check_owners(self) -> None:
        """Before anything of partitions newly given to this member is handed out: raise
        `DatabaseMismatch` if another database committed their offsets (a replica on a
        database of its own would act on sagas its database never saw)."""
        assigned = set(self._consumer.assignment())
        if self._owner is None or assigned <= self._checked:
            return
        topics = {tp.topic for tp in assigned}
        for topic in topics:
            committed = await self._bus.committed(self._group, topic)
            mine = {tp.partition for tp in assigned if tp.topic == topic}
            labels = [owner for p, (_, owner) in committed.items() if p in mine]
            strangers = self._owner.strangers(labels)
            if strangers:
                raise DatabaseMismatch(
                    f"group {self._group!r} gave this member partitions of {topic} whose "
                    f"offsets database {', '.join(strangers)} committed, not this one "
                    f"({self._owner.id}): replicas of a service must share one database"
                )
        self._checked = assigned

    async def _read_unreadable(self, error: Exception, max_records: int) -> list[Delivery]:
        """After the failed fetch `error`: each assigned partition read raw from the
        group's committed offset up to its first unreadable record. Partitions without
        one go back to their committed offset (aiokafka may have moved past records it
        fetched but never returned); a partition with one goes on after what is returned.
        Raises `BusUnavailable` (for `error`) when no partition has an unreadable record."""
        consumer = self._consumer
        out: list[Delivery] = []
        try:
            async with asyncio.timeout(_WAIT_S), RawReader(self._options) as reader:
                for tp in sorted(consumer.assignment()):
                    start = await consumer.committed(tp)
                    if start is None:
                        start = (await consumer.beginning_offsets([tp]))[tp]
                    records, _ = await reader.read(tp, start)
                    cut = next((i for i, r in enumerate(records) if r.unreadable), None)
                    if cut is None:
                        consumer.seek(tp, start)
                        continue
                    taken = records[: min(cut + 1, max_records)]
                    out.extend(delivery(tp, r) for r in taken)
                    consumer.seek(tp, taken[-1].offset + 1)
        except _FAILURES as exc:
            log.debug("raw read after a failed fetch failed too: %s", _describe(exc))
        if not out:
            raise BusUnavailable(
                f"cannot fetch for group {self._group!r}: {_describe(error)}"
            ) from error
        return out

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Commit, per partition, the offset after the highest delivery given."""
        offsets: dict[Any, Any] = {}
        for d in deliveries:
            tp = TopicPartition(d.record.topic, d.partition)
            if tp not in offsets or offsets[tp].offset <= d.offset:
                offsets[tp] = OffsetAndMetadata(d.offset + 1, self._owner.id if self._owner else "")
        if not offsets:
            return
        try:
            # aiokafka retries a commit for as long as the coordinator is away.
            async with asyncio.timeout(_REQUEST_TIMEOUT_MS / 1000):
                await self._consumer.commit(offsets)
        except _FAILURES as exc:
            raise BusUnavailable(
                f"cannot commit for group {self._group!r}: {_describe(exc)}"
            ) from exc

    async def close(self) -> None:
        """Leave the group (its partitions go to other members); idempotent."""
        self._registry.discard(self)
        await _quietly_stop(self._consumer)


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


def _delivery(message: ConsumerRecord) -> Delivery:
    record = Record(
        topic=message.topic,
        key=message.key or b"",
        value=message.value or b"",
        # A header may legally carry no value; it must not make the record unreadable.
        headers=tuple(
            (name, bytes(value) if value is not None else b"") for name, value in message.headers
        ),
    )
    return Delivery(record=record, partition=message.partition, offset=message.offset)


async def _quietly_stop(client: Any) -> None:
    # Stopping is cleanup: a broker that went away must not turn it into a second error,
    # nor hold the process (a producer flushing to no broker waits for ever).
    with contextlib.suppress(*_FAILURES):
        async with asyncio.timeout(_STOP_S):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()


@contextlib.contextmanager
def _logged_reasons() -> Iterator[list[str]]:
    """What aiokafka logs at WARNING and above meanwhile.

    Its exception for a failed bootstrap only says "Unable to bootstrap from [...]"; the
    cause (connection refused, unknown host, TLS or SASL failure) is only logged.
    """
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())
