"""The published contract is enough to talk to the services: a producer that knows only
docs/asyncapi.yaml and docs/schemas/ (here librdkafka's kcat, fed values built from those
files alone) writes every event of the registry onto the real Kafka broker, and each
service running under `saga run` takes it in exactly as its state machine says: applied
where the event is allowed first, recorded and skipped as not allowed otherwise; never
dead-lettered.

The project is generated from the trip registry with two events at version 2
(tests/versioned.py), by tests/test_saga_run.py's `make_project` (reactions from
tests/autoreact.py), on topics of its own: kcat writes each event's older version too,
and the services read it through the registry's upcasts."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from saga_registry.engine.machine import ServiceMachine
from saga_registry.registry import load_registry
from tests.test_envelope_modes import states_table
from tests.test_saga_run import make_project, start
from tests.versioned import trip_v2

_STRINGS = ["AAA", "2026-01-01", "AB1234", "ABC123", "x"]
"""Candidates for a string with a pattern: the registries' patterns take one of them."""


def instance(schema: dict[str, Any]) -> Any:
    """A value of `schema` (the subset of JSON Schema the registry writes), every optional
    property included, so that the consumer reads those too."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]  # an older version's first: a value its upcast maps
    kind = schema["type"]
    if kind == "object":
        return {name: instance(sub) for name, sub in schema["properties"].items()}
    if kind == "array":
        return [instance(schema["items"])] * max(schema.get("minItems", 1), 1)
    if kind == "integer":
        return int(schema.get("minimum", 3))
    if kind == "number":
        return float(schema.get("minimum", 2.5))
    if kind == "boolean":
        return True
    size = max(schema.get("minLength", 1), 1)
    if "pattern" in schema:
        fits = [s for s in _STRINGS if jsonschema.Draft202012Validator(schema).is_valid(s)]
        assert fits, f"no candidate string fits {schema['pattern']!r}"
        return fits[0]
    return "k" * size


def headers_of(message: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """Every header the message's schema lists: its `const`, else the value in `values`."""
    return {
        name: str(prop["const"] if "const" in prop else values[name])
        for name, prop in message["headers"]["properties"].items()
    }


def read_rows(db: Path, sql: str, *args: str) -> list[tuple[Any, ...]]:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return list(conn.execute(sql, args))
    except sqlite3.OperationalError:  # not created yet
        return []


def test_kcat_writes_every_event_from_the_contract_alone_and_the_services_take_it(
    tmp_path: Path, kafka_bootstrap: str, kcat: str
) -> None:
    root = make_project(tmp_path, edit=trip_v2)
    reg = load_registry(root / "registry" / "saga.yaml")
    doc = yaml.safe_load((root / "docs" / "asyncapi.yaml").read_text("utf-8"))
    topic = doc["channels"]["events"]["address"]
    assert topic == reg.events_topic.name
    machines = {s.name: ServiceMachine(reg, s.name) for s in reg.services}
    tag = uuid.uuid4().hex[:8]
    # Every version of every event: the current ones, and the older ones consumers still
    # read (the document's `<Event>.v<N>` messages).
    wire = [(e.name, v) for e in reg.events for v in range(1, e.version + 1)]
    assert len(wire) > len(reg.events), "some events have an older version"
    service = start(root, bus=f"kafka://{kafka_bootstrap}")
    sent: dict[tuple[str, int], tuple[str, str]] = {}  # (event, version) -> (id, saga key)
    try:
        # The services' tables exist once they have started (topics created too).
        deadline = time.monotonic() + 120
        readers = [s for s in reg.services if machines[s.name].projection.events]
        while time.monotonic() < deadline and not all(
            states_table(root / "dbs" / f"{s.name.lower()}.db") for s in readers
        ):
            assert service.poll() is None, service.communicate()[1]
            time.sleep(0.2)
        for name, version in wire:
            latest = version == reg.event(name).version
            message = doc["components"]["messages"][name if latest else f"{name}.v{version}"]
            schema_file = root / "docs" / "schemas" / f"{name}.v{version}.json"
            schema = json.loads(schema_file.read_text("utf-8"))
            key = f"kcat-{tag}-{name}-v{version}"
            data = instance(schema)
            data[reg.key] = key
            jsonschema.Draft202012Validator(schema).validate(data)
            jsonschema.Draft7Validator(message["payload"]).validate(data)
            jsonschema.Draft7Validator(message["bindings"]["kafka"]["key"]).validate(key)
            event_id = f"ev-{tag}-{name}-v{version}"
            headers = headers_of(
                message,
                {
                    "ce_id": event_id,
                    "ce_source": "kcat",
                    "ce_time": "2026-12-02T06:30:00.125Z",
                    "ce_partitionkey": key,
                    "ce_correlationid": f"corr-{event_id}",
                    "ce_causationid": f"cause-{tag}",
                    "ce_traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                    "ce_tracestate": "kcat=1",
                    "content-type": "application/json",
                },
            )
            jsonschema.Draft7Validator(
                message["headers"], format_checker=jsonschema.FormatChecker()
            ).validate(headers)
            assert headers["ce_dataschema"] == f"urn:saga:{reg.name}:{name}:v{version}"
            args = [kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-k", key]
            for header, value in headers.items():
                args += ["-H", f"{header}={value}"]
            produced = subprocess.run(
                args, input=json.dumps(data) + "\n", capture_output=True, text=True, timeout=60
            )
            assert produced.returncode == 0, produced.stderr
            sent[(name, version)] = (event_id, key)
        # Each service that takes in an event judges it from a saga it has never seen.
        expected = {
            (name, version, s.name): machines[s.name].decide(None, name)
            for name, version in wire
            for s in reg.services
            if name in machines[s.name].projection.events
        }
        reacted = {r.event for s in reg.services for r in s.reactions}
        assert {name for name, _, _ in expected} >= reacted
        assert any(step.allowed for step in expected.values())
        assert any(not step.allowed for step in expected.values())
        found: dict[tuple[str, int, str], str] = {}
        while time.monotonic() < deadline and len(found) < len(expected):
            assert service.poll() is None, service.communicate()[1]
            for name, version, taker in set(expected) - set(found):
                event_id, _ = sent[(name, version)]
                db = root / "dbs" / f"{taker.lower()}.db"
                applied = "SELECT source, event_type FROM saga_inbox WHERE event_id = ?"
                skipped = "SELECT reason, state FROM saga_skipped WHERE event_id = ?"
                # Every event taken in has its inbox row; one not allowed also a skip,
                # written in the same transaction.
                if inbox := read_rows(db, applied, event_id):
                    assert inbox == [("kcat", name)]
                    skips = read_rows(db, skipped, event_id)
                    assert skips in ([], [("not_allowed", reg.state_machine.initial)])
                    found[(name, version, taker)] = "skipped" if skips else "applied"
            time.sleep(0.3)
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=60)
    assert found == {
        taken: "applied" if step.allowed else "skipped" for taken, step in expected.items()
    }, err
    assert any(v < reg.event(n).version and step.allowed for (n, v, _), step in expected.items())
    for (name, version, taker), step in expected.items():
        if step.allowed:  # the kcat event started the saga: its correlation id is the saga's
            event_id, key = sent[(name, version)]
            db = root / "dbs" / f"{taker.lower()}.db"
            sql = "SELECT correlation_id FROM saga_state WHERE saga_id = ?"
            assert read_rows(db, sql, key) == [(f"corr-{event_id}",)], (name, version, taker)
    dead = subprocess.run(
        [kcat, "-C", "-b", kafka_bootstrap, "-t", reg.dead_letter_topic.name, "-o", "beginning",
         "-e", "-q", "-f", "%h\n"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dead.returncode == 0, dead.stderr
    assert not any(event_id in dead.stdout for event_id, _ in sent.values()), dead.stdout
    assert service.returncode == 0, err
