"""Records the bus client cannot even read (a header name that is not UTF-8, a damaged
batch, a row no bus wrote) are dead-lettered with what could be read of them and passed:
they never stall a consumer, and tools that list a topic show them instead of failing."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
from pathlib import Path

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from sqlalchemy import func, select

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses import EmbeddedBus, KafkaBus
from saga_registry.engine.buses.kafka_raw import read_batches
from saga_registry.engine.deadletter import DeadLetter
from saga_registry.registry import Registry, load_registry
from tests.runtime_kit import Harness, event, fresh_registry, publish, scripted
from tests.test_saga_run import bus_object, make_project, saga_cli

BAD_NAME = b"x_\xff"
VALUE = b'{"not": "an event"}'


def write_unreadable(bus: Bus, topic: str, key: str, request: pytest.FixtureRequest) -> None:
    """Put on `topic` a record this bus's client cannot read, as a foreign writer would."""
    if isinstance(bus, KafkaBus):
        kcat = request.getfixturevalue("kcat")
        subprocess.run(
            [kcat, "-b", bus.bootstrap, "-P", "-t", topic, "-k", key, "-H", b"%b=1" % BAD_NAME],
            input=VALUE,
            check=True,
            timeout=30,
        )
        return
    assert isinstance(bus, EmbeddedBus)
    with contextlib.closing(sqlite3.connect(bus.path)) as conn, conn:
        # Headers not JSON, the key stored as text: a row no EmbeddedBus wrote.
        conn.execute(
            'INSERT INTO records (topic, "partition", "offset", key, headers, value, ts)'
            ' SELECT ?, 0, COALESCE(MAX("offset") + 1, 0), ?, ?, ?, 0 FROM records'
            ' WHERE topic = ? AND "partition" = 0',
            (topic, key, b"\xff\xfe[not json", VALUE, topic),
        )


async def _ready(bus: Bus, registry: Registry) -> None:
    await bus.ensure_topics(
        [
            TopicSpec(registry.events_topic.name, 1),
            TopicSpec(registry.dead_letter_topic.name, 1),
        ]
    )


async def test_unreadable_record_is_dead_lettered_and_the_consumer_goes_on(
    bus: Bus, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    registry = fresh_registry()
    await _ready(bus, registry)
    topic = registry.events_topic.name
    await publish(bus, registry, event("OrderCreated", "before"))
    write_unreadable(bus, topic, "poison", request)
    await publish(bus, registry, event("OrderCreated", "after"))

    h = Harness(registry, scripted("Inventory"), bus, f"sqlite:///{tmp_path}/db")
    runner = await h.start()
    assert h.sub is not None
    await h.sub.close()  # the runner's own loop consumes
    stop = asyncio.Event()
    loop = asyncio.create_task(runner.run(stop))
    try:
        async with asyncio.timeout(60):
            while await h.calls() < 2:
                await asyncio.sleep(0.2)
    finally:
        stop.set()
        await loop
    states = await h.rows(select(tables.saga_state.c.saga_id, tables.saga_state.c.state))
    assert sorted(states) == [("after", "placed"), ("before", "placed")]
    assert await h.scalar(select(func.count()).select_from(tables.inbox)) == 2

    letters = await bus.read_all(registry.dead_letter_topic.name)
    assert len(letters) == 1
    letter = DeadLetter.of(letters[0])
    assert letter.service == "Inventory"
    assert letter.saga_id == "poison"
    assert letter.error.startswith("unreadable record:"), letter.error
    assert letters[0].record.value == VALUE  # the raw bytes are kept
    await h.crash()


async def test_listing_a_topic_shows_an_unreadable_record(
    bus: Bus, request: pytest.FixtureRequest
) -> None:
    registry = fresh_registry()
    await _ready(bus, registry)
    dead_topic = registry.dead_letter_topic.name
    write_unreadable(bus, dead_topic, "poison", request)
    listed = await bus.read_all(dead_topic)
    assert len(listed) == 1
    assert listed[0].unreadable
    assert listed[0].record.key == b"poison"
    assert listed[0].record.value == VALUE
    assert DeadLetter.of(listed[0]).saga_id == "poison"


def _batch(headers: list[tuple[str, bytes]]) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=1, key=b"k0", value=b"v0", headers=[])
    builder.append(1, timestamp=1, key=b"k1", value=b"v1", headers=headers)
    return bytearray(builder.build())


def _fix_crc(batch: bytearray) -> bytes:
    batch[17:21] = calc_crc32c(bytes(batch[21:])).to_bytes(4, "big")
    return bytes(batch)


def test_raw_reader_reads_a_header_name_that_is_not_utf8() -> None:
    batch = _batch([("x_y", b"1")])
    at = batch.index(b"x_y")
    batch[at + 2] = 0xFF
    records = list(read_batches(_fix_crc(batch)))
    assert [(r.offset, r.key, r.value) for r in records] == [(0, b"k0", b"v0"), (1, b"k1", b"v1")]
    assert records[0].unreadable is None
    assert records[1].headers == (("x_\\xff", b"1"),)
    assert records[1].unreadable == "header name 'x_\\\\xff' is not UTF-8"


def test_raw_reader_marks_every_offset_of_a_damaged_batch() -> None:
    batch = _batch([])
    batch[-1] ^= 0xFF  # a flipped bit the checksum catches
    records = list(read_batches(bytes(batch)))
    assert [r.offset for r in records] == [0, 1]
    assert all(r.unreadable and "checksum mismatch" in r.unreadable for r in records)
    assert records[0].value == bytes(batch)  # the batch's bytes, for the dead-letter copy


def test_raw_reader_leaves_out_a_batch_cut_short() -> None:
    whole = _fix_crc(_batch([]))
    assert [r.offset for r in read_batches(whole + whole[:30])] == [0, 1]


@pytest.mark.parametrize("kind", ["embedded", "kafka"])
def test_dlq_list_shows_an_unreadable_letter(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    bus_url = "embedded:bus.db"
    if kind == "kafka":
        bus_url = f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    root = make_project(tmp_path)
    reg = load_registry(root / "registry" / "saga.yaml")

    async def poison() -> None:
        async with bus_object(root, bus_url) as b:
            await b.ensure_topics([TopicSpec(reg.dead_letter_topic.name, 1)])
            write_unreadable(b, reg.dead_letter_topic.name, "poison", request)

    asyncio.run(poison())
    listed = saga_cli(root, bus_url, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert "\tpoison\t" in listed.stdout
    assert "1 dead-lettered record(s)" in listed.stderr
