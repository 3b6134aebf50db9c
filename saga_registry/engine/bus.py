"""The bus interface: what the runtime needs from a log of records, whoever provides it.

Two implementations keep the same contract (`engine/buses/`): `KafkaBus` on aiokafka and
`EmbeddedBus`, a durable log in one SQLite file. The contract, tested against both:

- `publish` returns only once the records are durable (Kafka: acks=all with an idempotent
  producer; embedded: committed to the SQLite file). Records with the same key land in the
  same partition in publish order.
- A subscription belongs to a consumer group. Each group reads every record of its topics
  at least once, per partition in offset order, starting from the group's committed offset
  (from the beginning for a new group). `commit` stores, per partition, the offset after
  the last delivery given, with the subscription's owner label; deliveries not committed
  are delivered again after a restart.
- Nothing connects before `start()`; `stop()` is idempotent. Both work as `async with`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the bus should have."""

    name: str
    partitions: int = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One record: the saga id as key, CloudEvents attributes as headers, JSON as value."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def size(self) -> int:
        """Its bytes on the wire, near enough: key, value and headers."""
        return len(self.key) + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)

    def header(self, name: str) -> bytes | None:
        """The first header called `name`, or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Owner:
    """Who commits a group's offsets: the identity of the database that handled the
    records, and the one earlier label it accepts as its own (after an adoption)."""

    id: str = ""
    accepts: str | None = None

    def strangers(self, labels: Iterable[str]) -> list[str]:
        """The labels that are neither this owner's nor accepted by it (a blank label is
        from before owners were recorded, and passes)."""
        return sorted({x for x in labels if x and x not in (self.id, self.accepts)})


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record as delivered to a subscriber, with its place in the log.

    `unreadable` is set when the bus could not read the record as it was written (a header
    name that is not UTF-8, a batch the client cannot decompress, a damaged row): `record`
    then holds what could be read, and the runtime dead-letters it without reading it."""

    record: Record
    partition: int
    offset: int
    unreadable: str | None = None


def next_offsets(deliveries: Iterable[Delivery]) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the offset after the highest of `deliveries`: what a
    commit of them stores."""
    nexts: dict[tuple[str, int], int] = {}
    for d in deliveries:
        place = (d.record.topic, d.partition)
        nexts[place] = max(nexts.get(place, 0), d.offset + 1)
    return nexts


class Subscription(abc.ABC):
    """A consumer group's view of some topics."""

    @abc.abstractmethod
    async def fetch(self, max_records: int = 500, timeout_s: float = 0.5) -> list[Delivery]:
        """The next deliveries (possibly none after `timeout_s`), per partition in order."""

    @abc.abstractmethod
    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        """Mark these deliveries (and everything before them in their partitions) done."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the group; uncommitted deliveries will be delivered again."""

    @abc.abstractmethod
    async def lag(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition) this subscription reads: how many records are in the
        log past the last one it handed out."""


class Bus(abc.ABC):
    """A durable, partitioned log of records."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (raises `saga_registry.engine.errors.BusUnavailable` with a one-line reason)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect; idempotent."""

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""

    @abc.abstractmethod
    async def publish(self, records: Sequence[Record]) -> None:
        """Append records durably; per key, in the order given."""

    @abc.abstractmethod
    async def subscribe(
        self, group: str, topics: Sequence[str], owner: Owner | None = None
    ) -> Subscription:
        """Join consumer group `group` on `topics`; every offset the subscription commits
        is stored with `owner.id`. With an `owner`, fetching from a partition whose
        committed offset another owner stored raises `DatabaseMismatch` instead."""

    @abc.abstractmethod
    async def committed(self, group: str, topic: str) -> dict[int, tuple[int, str]]:
        """The offsets group `group` committed on `topic`: partition -> (offset after the
        last record handled, owner given at that commit). Empty if it never committed."""

    @abc.abstractmethod
    async def read_all(self, topic: str) -> list[Delivery]:
        """Every record currently in `topic`, outside any group (for tools like `dlq list`)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
