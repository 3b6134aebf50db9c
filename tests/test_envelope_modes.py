"""The envelope in both content modes of the CloudEvents Kafka protocol binding: binary
(attributes as `ce_*` headers) and structured (the whole event as a JSON object in the
value, `content-type: application/cloudevents+json`), media types compared as media types,
and `time` checked as an RFC 3339 timestamp."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from saga_registry.engine import tables
from saga_registry.engine.bus import Record, TopicSpec
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.deadletter import DeadLetter
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope
from saga_registry.registry import load_registry
from tests.autoreact import payload
from tests.runtime_kit import Harness, event, fresh_registry, scripted
from tests.test_saga_run import make_project, start

TOPIC = "t.events"
STRUCTURED = "application/cloudevents+json; charset=utf-8"


def _envelope() -> Envelope:
    created = event("OrderCreated", "o1")
    cause = Envelope.new(type="CartChecked", source="saga/t/Cart", saga_id="o1", data=b"{}")
    return Envelope.new(
        type="OrderCreated", source="saga/t/OMS", saga_id="o1", data=created.to_json(), cause=cause
    )


def _attributes(env: Envelope) -> dict[str, Any]:
    """`env` in the JSON event format, its data as a JSON value."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": env.id,
        "source": env.source,
        "type": env.type,
        "time": env.time,
        "datacontenttype": "application/json",
        "partitionkey": env.saga_id,
        "correlationid": env.correlation_id,
        "data": json.loads(env.data),
    }
    if env.causation_id:
        attributes["causationid"] = env.causation_id
    return attributes


def _structured(
    attributes: dict[str, Any],
    key: bytes = b"o1",
    content_type: str = STRUCTURED,
    topic: str = TOPIC,
) -> Record:
    value = json.dumps(attributes).encode()
    return Record(topic, key, value, (("content-type", content_type.encode()),))


def _binary(env: Envelope, topic: str = TOPIC, **changes: str | None) -> Record:
    """`env` in binary mode, with headers replaced (None removes one)."""
    record = env.to_record(topic)
    headers = {k: v.decode() for k, v in record.headers}
    for name, value in changes.items():
        name = name.replace("content_type", "content-type")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return Record(
        record.topic, record.key, record.value, tuple((k, v.encode()) for k, v in headers.items())
    )


def _refusal(record: Record) -> str:
    with pytest.raises(BadEnvelope) as caught:
        Envelope.from_record(record)
    message = str(caught.value)
    assert "\n" not in message, "a dead letter's reason is one line"
    return message


# --- structured content mode ----------------------------------------------------------


def test_a_structured_record_reads_as_the_same_envelope_as_the_binary_one() -> None:
    env = _envelope()
    assert env.causation_id, "the chain of cause travels too"
    binary = Envelope.from_record(env.to_record(TOPIC))
    structured = Envelope.from_record(_structured(_attributes(env)))
    assert structured == binary
    assert json.loads(structured.data) == json.loads(env.data)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json",
        "Application/CloudEvents+JSON",
        "application/cloudevents+json;charset=UTF-8",
    ],
)
def test_the_structured_media_type_is_compared_as_a_media_type(content_type: str) -> None:
    env = _envelope()
    read = Envelope.from_record(_structured(_attributes(env), content_type=content_type))
    assert (read.id, read.type, read.saga_id) == (env.id, env.type, env.saga_id)


def test_a_structured_record_without_a_key_takes_the_partitionkey_attribute() -> None:
    env = _envelope()
    assert Envelope.from_record(_structured(_attributes(env), key=b"")).saga_id == "o1"


def test_structured_data_may_come_as_data_base64() -> None:
    env = _envelope()
    attributes = _attributes(env)
    del attributes["data"]
    attributes["data_base64"] = base64.b64encode(env.data).decode()
    assert Envelope.from_record(_structured(attributes)).data == env.data


def test_a_structured_event_with_no_chain_and_no_time_starts_its_own() -> None:
    attributes = _attributes(_envelope())
    for name in ("correlationid", "causationid", "time", "datacontenttype"):
        del attributes[name]
    read = Envelope.from_record(_structured(attributes))
    assert read.correlation_id == read.id and read.causation_id is None and read.time == ""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"specversion": None}, "missing CloudEvents attribute(s): specversion"),
        ({"id": None, "type": ""}, "missing CloudEvents attribute(s): id, type"),
        ({"specversion": "0.3"}, "unsupported specversion '0.3'"),
        ({"source": 7}, "attribute source is not a string"),
        ({"correlationid": ["x"]}, "attribute correlationid is not a string"),
        ({"time": "yesterday"}, "time 'yesterday' is not an RFC 3339 timestamp"),
        ({"datacontenttype": "text/xml"}, "unsupported datacontenttype 'text/xml'"),
        ({"data_base64": "AAAA"}, "has both data and data_base64"),
        ({"data": None, "data_base64": "not base64!"}, "data_base64 is not base64"),
        ({"partitionkey": None}, None),  # the record key is enough
    ],
)
def test_a_bad_structured_event_is_refused_in_one_line(
    change: dict[str, Any], reason: str | None
) -> None:
    attributes = _attributes(_envelope())
    for name, value in change.items():
        if value is None:
            attributes.pop(name)
        else:
            attributes[name] = value
    record = _structured(attributes)
    if reason is None:
        assert Envelope.from_record(record).saga_id == "o1"
    else:
        assert reason in _refusal(record)


@pytest.mark.parametrize(
    ("value", "content_type", "reason"),
    [
        (b"\x00\xffno", STRUCTURED, "structured CloudEvent is not JSON"),
        (b"[1, 2]", STRUCTURED, "structured CloudEvent is not a JSON object"),
        (b"{}", "application/cloudevents-batch+json", "batched content mode is not supported"),
        (b"{}", "application/cloudevents+avro", "unsupported event format"),
    ],
)
def test_a_structured_value_that_is_no_json_event_is_refused(
    value: bytes, content_type: str, reason: str
) -> None:
    record = Record(TOPIC, b"o1", value, (("content-type", content_type.encode()),))
    assert reason in _refusal(record)


def test_a_structured_record_without_key_or_partitionkey_is_refused() -> None:
    attributes = _attributes(_envelope())
    del attributes["partitionkey"]
    assert "no saga id" in _refusal(_structured(attributes, key=b""))


# --- binary content mode --------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"content_type": "Application/JSON; charset=utf-8"},
        {"content_type": "application/json;charset=UTF-8"},
        {"content_type": None},  # JSON by default
        {"content_type": None, "ce_datacontenttype": "APPLICATION/JSON"},
    ],
)
def test_binary_mode_compares_media_types_as_media_types(header: dict[str, str | None]) -> None:
    env = _envelope()
    assert Envelope.from_record(_binary(env, **header)) == Envelope.from_record(
        env.to_record(TOPIC)
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"content_type": "text/plain"}, "unsupported content-type 'text/plain'"),
        ({"content_type": "application/jsonx"}, "unsupported content-type"),
        ({"ce_datacontenttype": "text/csv"}, "unsupported ce_datacontenttype 'text/csv'"),
    ],
)
def test_binary_mode_refuses_data_that_is_not_json(
    header: dict[str, str | None], reason: str
) -> None:
    assert reason in _refusal(_binary(_envelope(), **header))


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-12-01T17:00:00Z",
        "2026-12-01t17:00:00.123456789+05:30",
        "2026-12-01T17:00:00-00:00",
        "2016-12-31T23:59:60Z",  # a leap second
    ],
)
def test_an_rfc_3339_ce_time_is_taken(stamp: str) -> None:
    assert Envelope.from_record(_binary(_envelope(), ce_time=stamp)).time == stamp


@pytest.mark.parametrize(
    "stamp",
    [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-12-01T17:00:00",  # no offset
        "2026-12-01",
        "2026-12-01T25:00:00Z",
        "1764608400",
        "",
    ],
)
def test_a_ce_time_that_is_not_rfc_3339_is_refused(stamp: str) -> None:
    assert f"ce_time {stamp!r} is not an RFC 3339 timestamp" in _refusal(
        _binary(_envelope(), ce_time=stamp)
    )


def test_a_record_without_ce_time_is_still_taken() -> None:
    assert Envelope.from_record(_binary(_envelope(), ce_time=None)).time == ""


# --- through a service ----------------------------------------------------------------


async def test_a_service_applies_a_structured_event_and_dead_letters_a_bad_time(
    tmp_path: Path,
) -> None:
    registry = fresh_registry()
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    await bus.ensure_topics(
        [
            TopicSpec(t.name, t.partitions)
            for t in (registry.events_topic, registry.dead_letter_topic)
        ]
    )
    h = Harness(registry, scripted("Inventory"), bus, f"sqlite:///{tmp_path}/{{service}}.db")
    await h.start()
    try:
        topic = registry.events_topic.name
        good = Envelope.new(
            type="OrderCreated",
            source="x",
            saga_id="s1",
            data=event("OrderCreated", "s1").to_json(),
        )
        late = Envelope.new(
            type="OrderCreated",
            source="x",
            saga_id="s2",
            data=event("OrderCreated", "s2").to_json(),
        )
        await bus.publish(
            [
                _structured(_attributes(good), key=b"s1", topic=topic),
                _binary(late, topic, ce_time="last tuesday"),
            ]
        )
        assert sorted(await h.consume(2)) == ["applied", "dead"]
        state = await h.scalar(
            select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == "s1")
        )
        assert state == "placed"
        (letter,) = [DeadLetter.of(d) for d in await bus.read_all(registry.dead_letter_topic.name)]
        assert letter.error_type == "BadEnvelope"
        assert letter.error == "ce_time 'last tuesday' is not an RFC 3339 timestamp"
    finally:
        await h.crash()
        await bus.stop()


# --- a foreign client -----------------------------------------------------------------


def test_kcat_produces_a_structured_event_a_service_process_takes(
    tmp_path: Path, kafka_bootstrap: str, kcat: str
) -> None:
    # A foreign client (librdkafka's kcat) writes the event the way the binding's
    # structured mode does; `saga run Flights`, a process of its own in a project generated
    # from the trip registry, must react to it.
    root = make_project(tmp_path)
    reg = load_registry(root / "registry" / "saga.yaml")
    tag = uuid.uuid4().hex[:8]
    trip = f"kcat-{tag}"
    attributes = {
        "specversion": "1.0",
        "id": f"ev-{tag}",
        "source": "kcat",
        "type": "TripRequested",
        "time": "2026-12-01T17:00:00.5+01:00",
        "datacontenttype": "application/json",
        "partitionkey": trip,
        "correlationid": f"corr-{tag}",
        "data": payload(reg, "TripRequested", trip),
    }
    bus = f"kafka://{kafka_bootstrap}"
    service = start(root, "Flights", bus=bus)
    db = root / "dbs" / "flights.db"
    emitted: list[dict[str, str]] = []
    try:
        # The topic exists once the service has started (it creates its topics).
        deadline = time.monotonic() + 90
        while not states_table(db) and time.monotonic() < deadline:
            assert service.poll() is None, service.communicate()[1]
            time.sleep(0.2)
        produced = subprocess.run(
            [kcat, "-P", "-b", kafka_bootstrap, "-t", reg.events_topic.name, "-k", trip,
             "-H", f"content-type={STRUCTURED}"],
            input=json.dumps(attributes) + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr
        while not emitted and time.monotonic() < deadline:
            assert service.poll() is None, service.communicate()[1]
            with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as conn:
                emitted = [
                    dict(json.loads(h)) for (h,) in conn.execute("SELECT headers FROM saga_outbox")
                ]
            time.sleep(0.3)
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=60)
    assert [e["ce_type"] for e in emitted] in (["FlightBooked"], ["FlightBookingFailed"]), err
    assert emitted[0]["ce_causationid"] == f"ev-{tag}", "the reaction names the kcat event"
    assert emitted[0]["ce_correlationid"] == f"corr-{tag}", "and carries its correlation id"
    with sqlite3.connect(db) as conn:
        inbox = list(conn.execute("SELECT event_id, source, event_type FROM saga_inbox"))
    assert (f"ev-{tag}", "kcat", "TripRequested") in inbox
    assert service.returncode == 0, err


def states_table(db: Path) -> bool:
    """Whether the service has created its tables (it has started)."""
    if not db.exists():
        return False
    with sqlite3.connect(db, timeout=30) as conn:
        found = conn.execute("SELECT name FROM sqlite_master WHERE name = 'saga_state'")
        return found.fetchone() is not None


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_dead_letter_shows_the_type_id_and_source_of_either_mode(mode: str) -> None:
    from saga_registry.engine.bus import Delivery
    from saga_registry.engine.deadletter import dead_letter

    env = _envelope()
    record = _binary(env) if mode == "binary" else _structured(_attributes(env))
    letter = dead_letter(Delivery(record, 0, 7), "t.dlq", "Inventory", "refused", 1)
    shown = DeadLetter.of(Delivery(letter, 0, 0))
    assert (shown.event_type, shown.event_id, shown.source) == ("OrderCreated", env.id, env.source)
