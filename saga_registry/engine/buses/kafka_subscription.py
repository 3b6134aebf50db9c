"""A Kafka consumer-group subscription: fetching (past records aiokafka cannot decode),
checking who committed the partitions it is given, committing with its owner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import OffsetAndMetadata

from saga_registry.engine.bus import Delivery, Owner, Subscription, next_offsets
from saga_registry.engine.buses.kafka_client import (
    FAILURES,
    REQUEST_TIMEOUT_MS,
    WAIT_S,
    delivery_of,
    describe,
    quietly_stop,
)
from saga_registry.engine.buses.kafka_raw import RawReader, delivery
from saga_registry.engine.errors import BusUnavailable, DatabaseMismatch

log = logging.getLogger(__name__)

Committed = Callable[[str, str], Awaitable[dict[int, tuple[int, str]]]]
"""A group's committed offsets on a topic (`Bus.committed`)."""


class KafkaSubscription(Subscription):
    """One aiokafka consumer in group `group`; commits only when told to."""

    def __init__(
        self,
        consumer: Any,
        group: str,
        registry: set[KafkaSubscription],
        options: dict[str, Any],
        committed: Committed,
        owner: Owner | None,
    ) -> None:
        self._consumer = consumer
        self._group = group
        self._registry = registry
        self._options = options
        self._committed = committed
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
        return [delivery_of(message) for messages in batches.values() for message in messages]

    async def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: its end offset minus the next offset to hand out."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(assigned)
        return {
            (tp.topic, tp.partition): max(0, ends[tp] - await self._consumer.position(tp))
            for tp in assigned
        }

    async def _check_owners(self) -> None:
        """Before anything of partitions newly given to this member is handed out: raise
        `DatabaseMismatch` if another database committed their offsets (a replica on a
        database of its own would act on sagas its database never saw)."""
        assigned = set(self._consumer.assignment())
        if self._owner is None or assigned <= self._checked:
            # Forget what was taken away: given back later, another member may have
            # committed it meanwhile.
            self._checked = assigned
            return
        topics = {tp.topic for tp in assigned}
        for topic in topics:
            committed = await self._committed(self._group, topic)
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
            async with asyncio.timeout(WAIT_S), RawReader(self._options) as reader:
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
        except FAILURES as exc:
            log.debug("raw read after a failed fetch failed too: %s", describe(exc))
        if not out:
            raise BusUnavailable(
                f"cannot fetch for group {self._group!r}: {describe(error)}"
            ) from error
        return out

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Commit, per partition, the offset after the highest delivery given."""
        owner = self._owner.id if self._owner else ""
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, owner)
            for (topic, partition), offset in next_offsets(deliveries).items()
        }
        if not offsets:
            return
        try:
            # aiokafka retries a commit for as long as the coordinator is away.
            async with asyncio.timeout(REQUEST_TIMEOUT_MS / 1000):
                await self._consumer.commit(offsets)
        except FAILURES as exc:
            raise BusUnavailable(
                f"cannot commit for group {self._group!r}: {describe(exc)}"
            ) from exc

    async def close(self) -> None:
        """Leave the group (its partitions go to other members); idempotent."""
        self._registry.discard(self)
        await quietly_stop(self._consumer)
