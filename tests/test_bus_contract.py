"""The bus contract of `engine/bus.py`, one test body run against both buses.

`bus` is an `EmbeddedBus` in a fresh file, or a `KafkaBus` on the broker of the
`kafka_bootstrap` fixture (skipped without one, failing under SAGA_REQUIRE_KAFKA=1). Every
test uses its own topics and groups, so the Kafka runs do not see each other's records.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from saga_registry.engine.bus import Bus, Delivery, Record, Subscription, TopicSpec
from saga_registry.engine.buses import EmbeddedBus, KafkaBus, KafkaOptions, bus_from_url
from saga_registry.engine.errors import BusUnavailable, ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture(params=["embedded", "kafka"])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus]:
    """A started bus of each kind, stopped after the test."""
    if request.param == "embedded":
        url = f"embedded:{tmp_path / 'bus.db'}"
    else:
        url = "kafka://" + request.getfixturevalue("kafka_bootstrap")
    async with bus_from_url(url) as started:
        yield started


def url_of(bus: Bus) -> str:
    """The URL that opens `bus` again, from another process."""
    if isinstance(bus, EmbeddedBus):
        return f"embedded:{bus.path}"
    assert isinstance(bus, KafkaBus)
    return f"kafka://{bus.bootstrap}"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def new_topic(bus: Bus, partitions: int = 1) -> str:
    name = fresh("topic")
    await bus.ensure_topics([TopicSpec(name, partitions)])
    return name


async def drain(subscription: Subscription, expected: int, limit_s: float = 30.0) -> list[Delivery]:
    """Fetch until `expected` deliveries came, then once more to catch any extra one."""
    out: list[Delivery] = []
    deadline = time.monotonic() + limit_s
    while len(out) < expected and time.monotonic() < deadline:
        out += await subscription.fetch(max_records=50, timeout_s=0.5)
    out += await subscription.fetch(timeout_s=0.5)
    return out


def places(deliveries: Sequence[Delivery]) -> list[tuple[int, int]]:
    return sorted((d.partition, d.offset) for d in deliveries)


def by_key(deliveries: Sequence[Delivery]) -> dict[bytes, list[Delivery]]:
    keyed: dict[bytes, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        keyed[d.record.key].append(d)
    return keyed


@pytest.mark.asyncio
async def test_records_come_back_intact_in_publish_order(bus: Bus) -> None:
    topic = await new_topic(bus)
    records = [
        Record(topic, b"saga-1", b'{"n": 1}', (("ce_type", b"OrderPlaced"), ("ce_id", b"1"))),
        Record(topic, b"saga-2", b'{"n": 2}'),
        # Header values are bytes, not text; a name may repeat.
        Record(topic, b"saga-1", b"\x00\xff binary", (("x", b"\x00\xff\x80"), ("x", b"again"))),
        Record(topic, b"\xfe\xff", b"", (("empty", b""),)),
    ]
    await bus.publish(records[:2])
    await bus.publish(records[2:])

    subscription = await bus.subscribe(fresh("group"), [topic])
    got = await drain(subscription, len(records))
    await subscription.close()

    assert [d.record for d in got] == records
    assert [(d.partition, d.offset) for d in got] == [(0, 0), (0, 1), (0, 2), (0, 3)]


@pytest.mark.asyncio
async def test_same_key_keeps_its_order_and_partition_across_partitions(bus: Bus) -> None:
    topic = await new_topic(bus, partitions=4)
    keys = [f"saga-{k}".encode() for k in range(8)]
    sent = [Record(topic, key, f"{i}".encode()) for i in range(25) for key in keys]
    for start in range(0, len(sent), 40):  # several publish calls, keys interleaved
        await bus.publish(sent[start : start + 40])

    subscription = await bus.subscribe(fresh("group"), [topic])
    got = await drain(subscription, len(sent))
    await subscription.close()

    assert len(got) == len(sent)
    for key, deliveries in by_key(got).items():
        assert len({d.partition for d in deliveries}) == 1, key
        assert [d.record.value for d in deliveries] == [f"{i}".encode() for i in range(25)]
    assert len({d.partition for d in got}) > 1  # the keys did spread over partitions
    for partition in {d.partition for d in got}:
        offsets = [d.offset for d in got if d.partition == partition]
        assert offsets == list(range(len(offsets)))


@pytest.mark.asyncio
async def test_uncommitted_deliveries_come_again_committed_ones_do_not(bus: Bus) -> None:
    topic = await new_topic(bus, partitions=2)
    group = fresh("group")
    await bus.publish([Record(topic, f"saga-{i % 4}".encode(), b"%d" % i) for i in range(20)])

    first = await bus.subscribe(group, [topic])
    got = await drain(first, 20)
    assert len(got) == 20
    # Commit the first half of each partition only.
    per_partition = Counter(d.partition for d in got)
    done = [d for d in got if d.offset < per_partition[d.partition] // 2]
    await first.commit(done)
    await first.close()

    second = await bus.subscribe(group, [topic])
    again = await drain(second, 20 - len(done))
    assert places(again) == sorted(set(places(got)) - set(places(done)))
    await second.commit(again)
    await second.close()

    # A record published now proves the third member is reading, and that it is all it gets.
    await bus.publish([Record(topic, b"saga-0", b"late")])
    third = await bus.subscribe(group, [topic])
    assert [d.record.value for d in await drain(third, 1)] == [b"late"]
    await third.close()


@pytest.mark.asyncio
async def test_every_group_gets_every_record(bus: Bus) -> None:
    topic = await new_topic(bus, partitions=3)
    await bus.publish([Record(topic, f"saga-{i % 5}".encode(), b"%d" % i) for i in range(30)])

    billing = await bus.subscribe(fresh("billing"), [topic])
    shipping = await bus.subscribe(fresh("shipping"), [topic])
    got_billing = await drain(billing, 30)
    await billing.commit(got_billing)  # one group's progress is not the other's
    got_shipping = await drain(shipping, 30)
    await billing.close()
    await shipping.close()

    assert len(got_billing) == len(got_shipping) == 30
    assert places(got_billing) == places(got_shipping)
    assert sorted(d.record.value for d in got_billing) == sorted(b"%d" % i for i in range(30))


@pytest.mark.asyncio
async def test_read_all_returns_everything_and_moves_no_group(bus: Bus) -> None:
    topic = await new_topic(bus, partitions=3)
    sent = [
        Record(topic, f"saga-{i % 7}".encode(), b"%d" % i, (("i", b"%d" % i),)) for i in range(40)
    ]
    await bus.publish(sent)

    everything = await bus.read_all(topic)
    again = await bus.read_all(topic)

    assert sorted(d.record.value for d in everything) == sorted(r.value for r in sent)
    assert [(d.partition, d.offset) for d in everything] == places(everything)
    assert {d.record.value: d.record for d in everything} == {r.value: r for r in sent}
    assert again == everything
    assert await bus.read_all(fresh("missing")) == []
    subscription = await bus.subscribe(fresh("group"), [topic])
    assert len(await drain(subscription, 40)) == 40
    await subscription.close()


PUBLISHER = """
import asyncio, sys
from saga_registry.engine.bus import Record
from saga_registry.engine.buses import bus_from_url

async def main(url, topic, count, linger):
    async with bus_from_url(url) as bus:
        await bus.publish([Record(topic, b"saga-%d" % (i % 3), b"%d" % i) for i in range(count)])
        print("published", flush=True)
        # Still inside `async with`: a kill now skips stop(), and any flush it would do.
        await asyncio.sleep(linger)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""


async def start_publisher(
    bus: Bus, topic: str, count: int, linger_s: float
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PUBLISHER,
        url_of(bus),
        topic,
        str(count),
        str(linger_s),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )


@pytest.mark.asyncio
async def test_records_published_by_another_process_are_read(bus: Bus) -> None:
    topic = await new_topic(bus, partitions=2)
    process = await start_publisher(bus, topic, count=50, linger_s=0)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0 and output == b"published\n"

    subscription = await bus.subscribe(fresh("group"), [topic])
    got = await drain(subscription, 50)
    await subscription.close()
    assert sorted(d.record.value for d in got) == sorted(b"%d" % i for i in range(50))


@pytest.mark.asyncio
async def test_publish_survives_sigkill_once_it_returned(bus: Bus) -> None:
    topic = await new_topic(bus, partitions=2)
    process = await start_publisher(bus, topic, count=500, linger_s=120)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    process.send_signal(signal.SIGKILL)  # at once, before the publisher can stop its bus
    await process.wait()
    assert line == b"published\n" and process.returncode == -signal.SIGKILL

    everything = await bus.read_all(topic)
    assert sorted(d.record.value for d in everything) == sorted(b"%d" % i for i in range(500))


RACER = """
import asyncio, os, sys, time
from saga_registry.engine.bus import Record
from saga_registry.engine.buses import bus_from_url

async def main(url, topic, label, go):
    async with bus_from_url(url) as bus:
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.002)
        for i in range(40):
            await bus.publish([Record(topic, b"one-key", b"%s-%d" % (label.encode(), i))])

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.asyncio
async def test_processes_publishing_at_once_never_share_an_offset(bus: Bus, tmp_path: Path) -> None:
    topic = await new_topic(bus)
    go = tmp_path / "go"
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RACER,
            url_of(bus),
            topic,
            label,
            str(go),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for label in ("a", "b", "c")
    ]
    for racer in racers:
        assert racer.stdout is not None
        assert await asyncio.wait_for(racer.stdout.readline(), 60) == b"ready\n"
    go.touch()  # all three start publishing together
    for racer in racers:
        await asyncio.wait_for(racer.wait(), 60)
        assert racer.returncode == 0

    everything = await bus.read_all(topic)
    assert [d.offset for d in everything] == list(range(120))
    for label in (b"a", b"b", b"c"):
        mine = [d.record.value for d in everything if d.record.value.startswith(label + b"-")]
        assert mine == [b"%s-%d" % (label, i) for i in range(40)]


@pytest.mark.asyncio
async def test_embedded_publish_waits_for_a_writer_and_takes_the_next_offset(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bus.db"
    async with EmbeddedBus(path) as bus:
        topic = await new_topic(bus)
        # Another process's publish, caught inside its transaction: it holds the write lock
        # and has appended offset 0, not yet committed.
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute(
                'INSERT INTO records (topic, "partition", "offset", key, headers, value, ts)'
                " VALUES (?, 0, 0, ?, '[]', ?, 0)",
                (topic, b"saga-1", b"theirs"),
            )
            publishing = asyncio.create_task(bus.publish([Record(topic, b"saga-1", b"ours")]))
            await asyncio.sleep(0.3)
            assert not publishing.done()  # waiting for the lock, not failing
            other.execute("COMMIT")
            await asyncio.wait_for(publishing, 10)
        finally:
            other.close()
        everything = await bus.read_all(topic)
    assert [(d.offset, d.record.value) for d in everything] == [(0, b"theirs"), (1, b"ours")]


@pytest.mark.asyncio
async def test_unreachable_kafka_raises_bus_unavailable_in_one_line() -> None:
    began = time.monotonic()
    with pytest.raises(BusUnavailable) as caught:
        await KafkaBus("127.0.0.1:1").start()
    assert time.monotonic() - began < 15
    message = str(caught.value)
    assert message.startswith("cannot reach Kafka at 127.0.0.1:1: ")
    assert "\n" not in message


@pytest.mark.asyncio
async def test_unopenable_embedded_log_raises_bus_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(BusUnavailable, match=r"^cannot open embedded log at .*a-file/bus\.db: "):
        await EmbeddedBus(blocker / "bus.db").start()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "kafka",
        "kafka://",
        "kafka://broker",
        "kafka://broker:port",
        "kafka://broker:9092,",
        "kafka://broker:9092/topic",
        "embedded:",
        "embedded://host/bus.db",
        "sqlite:///bus.db",
        "redis://127.0.0.1:6379",
    ],
)
def test_bad_bus_url_raises_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^unknown bus URL .*: use embedded"):
        bus_from_url(url)


def test_bus_urls_name_their_bus_without_connecting() -> None:
    default = bus_from_url("embedded")
    relative = bus_from_url("embedded:var/bus.db")
    absolute = bus_from_url("embedded:///srv/saga/bus.db")
    kafka = bus_from_url(
        "kafka://k1:9092,k2:9093",
        kafka_options=KafkaOptions(security_protocol="SASL_SSL", sasl_mechanism="PLAIN"),
    )
    assert isinstance(default, EmbeddedBus) and default.path == Path(".saga/bus.db")
    assert isinstance(relative, EmbeddedBus) and relative.path == Path("var/bus.db")
    assert isinstance(absolute, EmbeddedBus) and absolute.path == Path("/srv/saga/bus.db")
    assert isinstance(kafka, KafkaBus) and kafka.bootstrap == "k1:9092,k2:9093"
    assert kafka.security_protocol == "SASL_SSL" and kafka.sasl_mechanism == "PLAIN"
