"""Hostile records written straight onto the saga's topic, as a broken or malicious
producer would: random bytes, a wrong `ce_type`, missing and mistyped fields, a valid event
for a saga nobody placed, a 10 MB value, a record the bus client cannot even decode (on
Kafka a header name that is not UTF-8, written by kcat; in the embedded log a row whose
headers are not the bus's), and replays of records already on the topic.

Every kind but the last two must end in the dead-letter topic, once per consuming service;
the unknown saga's event is skipped (not allowed from the saga's initial state) and a
replay is skipped as a duplicate."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from handlers.events import OrderCreated, PaymentSucceeded
from saga_registry.engine.bus import Bus, Record
from saga_registry.engine.buses import EmbeddedBus, KafkaBus
from saga_registry.engine.buses.embedded import partition_for
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BusUnavailable

HUGE_BYTES = 10 << 20
GHOST_TYPE = "PaymentSucceeded"
"""The type of the valid event sent for a saga nobody placed."""
DEAD_KINDS = (
    "random_bytes",
    "wrong_type",
    "missing_field",
    "mistyped_field",
    "huge",
    "unreadable",
)
"""The kinds every service must dead-letter."""
SKIPPED_KINDS = ("unknown_saga", "replay")


@dataclass
class Poisoner:
    """Writes hostile records to `topic` of `bus`, remembering what it sent."""

    bus: Bus
    topic: str
    source: str
    rng: random.Random
    sent: Counter[str] = field(default_factory=Counter)
    dead_keys: dict[str, str | None] = field(default_factory=dict)
    """Keys of the records that must be dead-lettered, with their `ce_type` (None if
    they have none): every service that takes that type in must dead-letter them."""
    ghost_sagas: set[str] = field(default_factory=set)

    send_huge: Callable[[Record], Awaitable[None]] | None = None
    """How to write the 10 MB record, if not through `bus` (a Kafka producer allowed to)."""
    send_unreadable: Callable[[str, str], Awaitable[None]] | None = None
    """How to write an undecodable record (topic, key); without it that kind is not sent."""

    async def volley(self, history: list[Record]) -> None:
        """One record of every kind (a replay only once `history` holds records). Only
        what was written is counted: a volley cut short by an outage can be sent again."""
        n = sum(self.sent.values())
        ghost = f"ghost-{n}"
        records = [
            (kind, self._record(kind, f"poison-{n + i}")) for i, kind in enumerate(DEAD_KINDS)
        ]
        records.append(("unknown_saga", self._envelope(GHOST_TYPE, ghost, _payment(ghost))))
        if history:
            records.append(("replay", self.rng.choice(history)))
        # One at a time: the 10 MB record must not make the others too large to send.
        for kind, record in records:
            if kind == "unreadable":
                if self.send_unreadable is None:
                    continue
                await self.send_unreadable(self.topic, record.key.decode())
            elif kind == "huge" and self.send_huge is not None:
                await self.send_huge(record)
            else:
                await self.bus.publish([record])
            self.sent[kind] += 1
            if kind in DEAD_KINDS:
                ce_type = record.header("ce_type")
                self.dead_keys[record.key.decode()] = ce_type.decode() if ce_type else None
            elif kind == "unknown_saga":
                self.ghost_sagas.add(ghost)

    def _record(self, kind: str, key: str) -> Record:
        if kind == "unreadable":  # only its key is used: its writer makes the bytes
            return Record(self.topic, key.encode(), b"")
        if kind == "random_bytes":
            junk = self.rng.randbytes(self.rng.randint(1, 300))
            headers = (("ce_id", self.rng.randbytes(8)), ("\x00", b"\xff\xfe"))
            return Record(self.topic, key.encode(), junk, headers)
        if kind == "wrong_type":
            return self._envelope("OrderTeleported", key, {"order_id": key})
        if kind == "missing_field":
            return self._envelope("OrderCreated", key, {"order_id": key, "currency": "EUR"})
        if kind == "mistyped_field":
            bad = {**_order(key), "total": "lots", "items": "apple"}
            return self._envelope("OrderCreated", key, bad)
        # A well-formed event, only 10 MB: it must never be decoded, let alone applied.
        huge = {**_order(key), "customer_id": "x" * HUGE_BYTES}
        return self._envelope("OrderCreated", key, huge)

    def _envelope(self, kind: str, saga: str, payload: dict[str, object]) -> Record:
        data = json.dumps(payload).encode()
        return Envelope.new(type=kind, source=self.source, saga_id=saga, data=data).to_record(
            self.topic
        )


def _order(order_id: str) -> dict[str, object]:
    """A valid OrderCreated payload (the generated class checks it)."""
    items = [{"sku": "apple", "quantity": 1, "unit_price": 120}]
    event = OrderCreated.from_dict(
        {"order_id": order_id, "customer_id": "c1", "items": items, "total": 120, "currency": "EUR"}
    )
    return dict(json.loads(event.to_json()))


def _payment(order_id: str) -> dict[str, object]:
    """A valid PaymentSucceeded payload."""
    event = PaymentSucceeded.from_dict(
        {
            "order_id": order_id,
            "customer_id": "c1",
            "payment_id": f"pay-{order_id}",
            "amount": 120,
            "currency": "EUR",
        }
    )
    return dict(json.loads(event.to_json()))


class HugeSender:
    """A plain aiokafka producer that may send 16 MB, after raising the topic's own limit
    (the broker refuses anything over 1 MB by default; the consumers must meet it)."""

    LIMIT = 16 << 20

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._producer: Any = None

    async def __call__(self, record: Record) -> None:
        """Send `record`, connecting first if need be."""
        if self._producer is None:
            await self._connect()
        try:
            await self._producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
        except Exception as exc:
            await self.stop()
            raise BusUnavailable(f"chaos: cannot send the 10 MB record: {exc}") from exc

    async def _connect(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, max_request_size=self.LIMIT, acks="all"
        )
        try:
            await admin.start()
            resource = ConfigResource(
                ConfigResourceType.TOPIC, self.topic, {"max.message.bytes": str(self.LIMIT)}
            )
            await admin.alter_configs([resource])
            await producer.start()
        except Exception as exc:  # the broker is restarting: the volley is tried again
            await producer.stop()
            raise BusUnavailable(f"chaos: cannot reach Kafka for the 10 MB record: {exc}") from exc
        finally:
            await admin.close()
        self._producer = producer

    async def stop(self) -> None:
        """Close the producer, if open."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


UNREADABLE_VALUE = b'{"note": "a record whose header name is not UTF-8"}'


def unreadable_writer(bus: Bus) -> Callable[[str, str], Awaitable[None]] | None:
    """What writes a record `bus`'s client cannot decode, or None where that cannot be
    done here (Kafka without Debian's kcat)."""
    if isinstance(bus, KafkaBus):
        kcat = shutil.which("kcat")
        if kcat is None:
            return None
        return functools.partial(_kcat_unreadable, kcat, bus.bootstrap)
    if isinstance(bus, EmbeddedBus):
        return functools.partial(_row_unreadable, bus.path)
    return None


async def _kcat_unreadable(kcat: str, bootstrap: str, topic: str, key: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        kcat,
        "-P",
        "-b",
        bootstrap,
        "-t",
        topic,
        "-k",
        key,
        "-H",
        b"x_\xff=1",
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(UNREADABLE_VALUE)
    if proc.returncode != 0:  # the broker is restarting: the volley is tried again
        raise BusUnavailable(f"chaos: kcat could not write: {err.decode(errors='replace')}")


async def _row_unreadable(path: Path, topic: str, key: str) -> None:
    def write() -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            (partitions,) = conn.execute(
                "SELECT partitions FROM topics WHERE name = ?", (topic,)
            ).fetchone()
            partition = partition_for(key.encode(), partitions)
            conn.execute(
                'INSERT INTO records (topic, "partition", "offset", key, headers, value, ts)'
                ' SELECT ?, ?, COALESCE(MAX("offset") + 1, 0), ?, ?, ?, ? FROM records'
                ' WHERE topic = ? AND "partition" = ?',
                # Written now: a timestamp of 0 would make retention take it for ancient
                # and prune it before a group that has not committed yet reads it.
                (
                    topic,
                    partition,
                    key.encode(),
                    b"\xff not json",
                    UNREADABLE_VALUE,
                    time.time(),
                    topic,
                    partition,
                ),
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    await asyncio.to_thread(write)
