"""The published contract: docs/asyncapi.yaml as AsyncAPI's official parser reads it,
what it says about each event (headers, key, payload, operations), and the JSON Schemas
in docs/schemas/ as JSON Schema's meta-schema and the engine's own payloads read them.

The parser runs through scripts/asyncapi-validate (Node.js); without node/npm those
tests skip, or fail under SAGA_REQUIRE_NODE=1 (CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from saga_registry.codegen import check, write
from saga_registry.codegen.json_schemas import DRAFT
from saga_registry.engine.envelope import _REQUIRED as ENGINE_REQUIRED_HEADERS
from saga_registry.registry import Registry, load_registry, versions
from saga_registry.registry.model import object_schema
from tests.autoreact import payload, sample
from tests.helpers import GOLDEN, ORDERS, ROOT, TRIP
from tests.runtime_kit import SAMPLES
from tests.test_kcat_contract import instance
from tests.versioned import trip_v2

VALIDATE = ROOT / "scripts" / "asyncapi-validate"
REGISTRIES = sorted((ROOT / "tests" / "registries").glob("*.yaml"))
SOURCES = [*(p.stem for p in REGISTRIES), "trip_v2"]
"""The registries the document is checked on: tests/registries/, and the trip registry
with two events at version 2 (tests/versioned.py)."""


def source(name: str, tmp_path: Path) -> Path:
    """The registry file called `name` (see SOURCES)."""
    if name == "trip_v2":
        path = tmp_path / "trip_v2.yaml"
        path.write_text(trip_v2(), "utf-8")
        return path
    return ROOT / "tests" / "registries" / f"{name}.yaml"


@pytest.fixture(scope="session")
def node() -> None:
    """node and npm are on PATH (skips, or fails under SAGA_REQUIRE_NODE=1)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed: the AsyncAPI parser runs on Node.js"
        if os.environ.get("SAGA_REQUIRE_NODE", "") not in ("", "0", "false", "no"):
            pytest.fail(f"SAGA_REQUIRE_NODE=1 but {reason}")
        pytest.skip(reason)


def validate(*files: Path) -> subprocess.CompletedProcess[str]:
    """scripts/asyncapi-validate --strict on `files` (warnings count as errors)."""
    return subprocess.run(
        [str(VALIDATE), "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def generated(tmp_path: Path, registry: Path) -> tuple[Registry, Path]:
    """`registry` loaded and generated into a project under `tmp_path`."""
    reg = load_registry(registry)
    root = tmp_path / registry.stem
    write(reg, registry, root, render=False, tests=False)
    return reg, root


def document(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((root / "docs" / "asyncapi.yaml").read_text("utf-8"))
    return doc


# --- the official parser ----------------------------------------------------------------


def test_the_official_parser_accepts_every_generated_document(node: None, tmp_path: Path) -> None:
    _, orders = generated(tmp_path, ORDERS)
    # An event may bear the name of the dead-letter channel's message.
    renamed = tmp_path / "renamed" / "orders.yaml"
    renamed.parent.mkdir()
    renamed.write_text(ORDERS.read_text("utf-8").replace("PaymentFailed", "DeadLetter"), "utf-8")
    reg, clash = generated(tmp_path / "renamed", renamed)
    assert reg.event("DeadLetter").kind == "failure"
    message = document(clash)["components"]["messages"]["DeadLetter"]
    assert message["headers"]["properties"]["ce_type"]["const"] == "DeadLetter", "the event's"
    _, versioned = generated(tmp_path, source("trip_v2", tmp_path))
    files = [
        ROOT / "docs" / "asyncapi.yaml",  # the checkout's, as committed
        orders / "docs" / "asyncapi.yaml",  # generated now
        clash / "docs" / "asyncapi.yaml",
        GOLDEN / "trip_booking" / "docs" / "asyncapi.yaml",
        versioned / "docs" / "asyncapi.yaml",  # older versions' messages too
    ]
    result = validate(*files)
    assert result.returncode == 0, result.stderr
    for f in files:
        assert f"{f}: valid AsyncAPI 3.0.0" in result.stdout
    assert result.stderr == "", "no error or warning at all"


def test_the_official_parser_refuses_a_broken_document(node: None, tmp_path: Path) -> None:
    # Two mistakes only the parser sees: YAML parses, PyYAML's round trip is fine, but an
    # operation names a message its channel does not carry, and a header schema has a
    # type JSON Schema does not know.
    _, root = generated(tmp_path, ORDERS)
    doc = document(root)
    op = doc["operations"]["Inventory.receive.OrderCreated"]
    op["messages"] = [{"$ref": "#/channels/deadLetters/messages/DeadLetter"}]
    wrong_channel = tmp_path / "wrong_channel.yaml"
    wrong_channel.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    doc = document(root)
    doc["components"]["messages"]["OrderCreated"]["headers"]["properties"]["ce_id"]["type"] = "txt"
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    result = validate(root / "docs" / "asyncapi.yaml", wrong_channel, bad_type)
    assert result.returncode == 1
    assert f"{root / 'docs' / 'asyncapi.yaml'}: valid" in result.stdout
    for broken, where in (
        (wrong_channel, "operations.Inventory.receive.OrderCreated.messages"),
        (bad_type, "components.messages.OrderCreated.headers.properties.ce_id.type"),
    ):
        assert f"error: {broken}: not a valid AsyncAPI document" in result.stderr
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith(f"{broken}:")]
        assert any(": error: " in ln and where in ln for ln in lines), result.stderr


def test_the_validator_names_a_missing_file(node: None, tmp_path: Path) -> None:
    result = validate(tmp_path / "nowhere.yaml")
    assert result.returncode == 1
    assert f"error: {tmp_path / 'nowhere.yaml'}: cannot read: ENOENT" in result.stderr


# --- what the document says ---------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_each_event_version_is_a_message_with_the_engine_s_headers_key_and_payload(
    name: str, tmp_path: Path
) -> None:
    reg, root = generated(tmp_path, source(name, tmp_path))
    doc = document(root)
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["title"] == reg.title
    channels = doc["channels"]
    assert channels["events"]["address"] == reg.events_topic.name
    assert channels["deadLetters"]["address"] == reg.dead_letter_topic.name
    assert doc["servers"]["kafka"]["protocol"] == "kafka"
    key_field = next(f for f in reg.events[0].fields if f.name == reg.key)
    ids = []
    for e in reg.events:
        for v in range(1, e.version + 1):
            ids.append(e.name if v == e.version else f"{e.name}.v{v}")
            message = doc["components"]["messages"][ids[-1]]
            headers = message["headers"]
            required = [*ENGINE_REQUIRED_HEADERS, *(["ce_dataschema"] if v > 1 else [])]
            assert headers["required"] == required
            assert headers["properties"]["ce_type"]["const"] == e.name
            urn = f"urn:saga:{reg.name}:{e.name}:v{v}"
            assert headers["properties"]["ce_dataschema"]["const"] == urn
            assert message["x-saga-version"] == v
            assert message["payload"] == object_schema(versions.fields_at(e, v))
            assert message["contentType"] == "application/json"
            assert message["summary"] == " ".join(e.stage_en.split())
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string"
            if key_field.type == "string":
                assert key.get("pattern") == key_field.pattern
            correlation = message["correlationId"]["$ref"].rsplit("/", 1)[1]
            location = doc["components"]["correlationIds"][correlation]["location"]
            assert location == "$message.header#/ce_correlationid"
        assert doc["components"]["messages"][e.name]["payload"] == e.payload_schema()
    assert list(channels["events"]["messages"]) == ids
    if name == "trip_v2":
        assert "TripRequested.v1" in ids and "FlightBooked.v1" in ids


@pytest.mark.parametrize("name", SOURCES)
def test_operations_are_what_each_service_sends_and_receives(name: str, tmp_path: Path) -> None:
    reg, root = generated(tmp_path, source(name, tmp_path))
    operations = document(root)["operations"]
    for s in reg.services:
        sends = {
            op["messages"][0]["$ref"].rsplit("/", 1)[1]
            for name, op in operations.items()
            if name.startswith(f"{s.name}.send.") and op["channel"]["$ref"] == "#/channels/events"
        }
        assert sends == {e.name for e in reg.events if e.producer == s.name}, s.name
        assert all(operations[f"{s.name}.send.{e}"]["action"] == "send" for e in sends)
        receives = {n for n in operations if n.startswith(f"{s.name}.receive.")}
        assert receives == {f"{s.name}.receive.{r.event}" for r in s.reactions}, s.name
        for r in s.reactions:
            op = operations[f"{s.name}.receive.{r.event}"]
            assert op["action"] == "receive"
            event = reg.event(r.event)  # every version of it: older ones are upcast
            read = [f"{r.event}.v{v}" for v in range(1, event.version)] + [r.event]
            assert op["messages"] == [{"$ref": f"#/channels/events/messages/{m}"} for m in read]
            assert op["x-saga-emits"] == list(r.emits)
            assert op.get("x-saga-defer", False) == r.defer


def test_older_versions_have_their_own_schema_and_message(tmp_path: Path) -> None:
    reg, root = generated(tmp_path, source("trip_v2", tmp_path))
    event = reg.event("TripRequested")
    assert event.version == 2
    folder = root / "docs" / "schemas"
    v1 = json.loads((folder / "TripRequested.v1.json").read_text("utf-8"))
    v2 = json.loads((folder / "TripRequested.v2.json").read_text("utf-8"))
    assert ("notes" in v1["properties"], "remarks" in v1["properties"]) == (True, False)
    assert ("notes" in v2["properties"], "remarks" in v2["properties"]) == (False, True)
    assert "channel" not in v1["properties"] and "channel" in v2["required"]
    assert v1["$id"] == f"urn:saga:{reg.name}:TripRequested:v1"
    messages = document(root)["components"]["messages"]
    assert messages["TripRequested.v1"]["payload"]["properties"] == v1["properties"]
    assert "ce_dataschema" not in messages["TripRequested.v1"]["headers"]["required"]
    assert "ce_dataschema" in messages["TripRequested"]["headers"]["required"]
    ops = document(root)["operations"]
    assert ops["Booking.send.TripRequested"]["messages"] == [
        {"$ref": "#/channels/events/messages/TripRequested"}
    ], "only the current version is produced"


def test_an_older_version_s_instance_upcasts_to_a_valid_current_one(tmp_path: Path) -> None:
    # The schema of version N-1 and the upcasts agree: what a producer writes after the
    # old schema, the consumers read as a payload the current schema takes.
    reg, root = generated(tmp_path, source("trip_v2", tmp_path))
    folder = root / "docs" / "schemas"
    older = [e for e in reg.events if e.version > 1]
    assert older
    for e in older:
        current = jsonschema.Draft202012Validator(
            json.loads((folder / f"{e.name}.v{e.version}.json").read_text("utf-8"))
        )
        for v in range(1, e.version):
            schema = json.loads((folder / f"{e.name}.v{v}.json").read_text("utf-8"))
            data = instance(schema)
            jsonschema.Draft202012Validator(schema).validate(data)
            assert not current.is_valid(data), "the versions differ"
            current.validate(versions.upcast(e, data, v))


def test_the_version_changes_with_the_contract_not_with_a_comment(tmp_path: Path) -> None:
    text = ORDERS.read_text("utf-8")
    commented = tmp_path / "commented" / "orders.yaml"
    changed = tmp_path / "changed" / "orders.yaml"
    for path in (commented, changed):
        path.parent.mkdir()
    commented.write_text("# a comment only\n" + text, "utf-8")
    assert "partitions: 6" in text
    changed.write_text(text.replace("partitions: 6", "partitions: 12", 1), "utf-8")
    versions = [
        document(generated(tmp_path / p.parent.name, p)[1])["info"]["version"]
        for p in (ORDERS, commented, changed)
    ]
    assert versions[0] == versions[1] != versions[2]
    assert len(versions[0]) == 16 and int(versions[0], 16) >= 0


def test_the_document_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    _, first = generated(tmp_path / "a", TRIP)
    _, second = generated(tmp_path / "b", TRIP)
    for rel in ("docs/asyncapi.yaml", "docs/schemas/TripRequested.v1.json"):
        assert (first / rel).read_bytes() == (second / rel).read_bytes()


# --- the JSON Schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_every_schema_file_is_a_valid_2020_12_schema_named_by_its_dataschema(
    name: str, tmp_path: Path
) -> None:
    reg, root = generated(tmp_path, source(name, tmp_path))
    folder = root / "docs" / "schemas"
    every = [(e, v) for e in reg.events for v in range(1, e.version + 1)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{e.name}.v{v}.json" for e, v in every
    )
    for e, v in every:
        schema = json.loads((folder / f"{e.name}.v{v}.json").read_text("utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == DRAFT
        assert schema["$id"] == f"urn:saga:{reg.name}:{e.name}:v{v}"
        fields = versions.fields_at(e, v)
        assert schema["required"] == [f.name for f in fields if f.required]
        assert list(schema["properties"]) == [f.name for f in fields]


def _schemas(root: Path) -> dict[str, jsonschema.Draft202012Validator]:
    return {
        p.name.split(".")[0]: jsonschema.Draft202012Validator(json.loads(p.read_text("utf-8")))
        for p in (root / "docs" / "schemas").glob("*.json")
    }


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda p: p.stem)
def test_the_engine_s_test_payloads_and_deadline_payloads_fit_the_schemas(
    registry: Path, tmp_path: Path
) -> None:
    reg, root = generated(tmp_path, registry)
    schemas = _schemas(root)
    key = sample(next(f for f in reg.events[0].fields if f.name == reg.key))
    for e in reg.events:
        schemas[e.name].validate(payload(reg, e.name, key))  # tests/autoreact.py's
    for d in reg.state_machine.deadlines:
        schemas[d.emit].validate({**dict(d.payload), reg.key: key})
    if registry == ORDERS:
        for name, data in SAMPLES.items():  # tests/runtime_kit.py's
            schemas[name].validate({"order_id": "o1", **data})


@pytest.mark.parametrize("example", ["blank", "checkout"])
def test_saga_init_s_sample_first_event_fits_its_schema(example: str, tmp_path: Path) -> None:
    scaffold = ROOT / "saga_registry" / "scaffold"
    reg, root = generated(tmp_path, scaffold / example / "registry" / "saga.yaml")
    first = next(s for s in reg.services if s.initiates).initiates[0]
    data = json.loads((scaffold / "samples" / f"{example}.json").read_text("utf-8"))
    key = sample(next(f for f in reg.event(first).fields if f.name == reg.key))
    _schemas(root)[first].validate({reg.key: key, **data})


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda p: p.stem)
def test_the_schema_refuses_what_the_engine_refuses(registry: Path, tmp_path: Path) -> None:
    # The published schema and the generated pydantic model agree: without a required
    # field, or with an unknown one, both refuse the payload.
    import importlib

    reg, root = generated(tmp_path, registry)
    schemas = _schemas(root)
    events = importlib.import_module(f"{registry.stem}.events")  # tests/golden's
    key = sample(next(f for f in reg.events[0].fields if f.name == reg.key))
    for e in reg.events:
        good = payload(reg, e.name, key)
        events.EVENT_TYPES[e.name].from_dict(good)
        bad = [{**good, "unknown_field": 1}]
        bad += [{k: v for k, v in good.items() if k != f.name} for f in e.fields if f.required]
        for data in bad:
            assert not schemas[e.name].is_valid(data), (e.name, data)
            with pytest.raises(ValueError):
                events.EVENT_TYPES[e.name].from_dict(data)


def test_check_flags_an_edited_schema_and_write_removes_a_stale_one(tmp_path: Path) -> None:
    reg, root = generated(tmp_path, ORDERS)
    schema = root / "docs" / "schemas" / "OrderCreated.v1.json"
    schema.write_text(schema.read_text("utf-8").replace('"type": "string"', '"type": "integer"'))
    stale = root / "docs" / "schemas" / "Gone.v1.json"
    stale.write_text('{"$comment": "Generated by `saga codegen` from x. DO NOT EDIT."}\n')
    mine = root / "docs" / "schemas" / "Mine.v1.json"
    mine.write_text("{}\n")
    found = check(reg, ORDERS, root, svgs=False, tests=False)
    assert "docs/schemas/OrderCreated.v1.json: differs from what the registry generates" in found
    assert "docs/schemas/Gone.v1.json: no longer generated" in found
    assert not any("Mine" in line for line in found), "a file not ours is left alone"
    report = write(reg, ORDERS, root, render=False, tests=False)
    assert "docs/schemas/Gone.v1.json" in report.removed and not stale.exists()
    assert mine.exists()
    assert check(reg, ORDERS, root, svgs=False, tests=False) == []
