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
from saga_registry.registry import Registry, load_registry
from tests.autoreact import payload, sample
from tests.helpers import GOLDEN, ORDERS, ROOT, TRIP, orders_data
from tests.runtime_kit import SAMPLES

VALIDATE = ROOT / "scripts" / "asyncapi-validate"
REGISTRIES = sorted((ROOT / "tests" / "registries").glob("*.yaml"))


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
    files = [
        ROOT / "docs" / "asyncapi.yaml",  # the checkout's, as committed
        orders / "docs" / "asyncapi.yaml",  # generated now
        clash / "docs" / "asyncapi.yaml",
        GOLDEN / "trip_booking" / "docs" / "asyncapi.yaml",
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


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda p: p.stem)
def test_each_event_is_a_message_with_the_engine_s_headers_key_and_payload(
    registry: Path, tmp_path: Path
) -> None:
    reg, root = generated(tmp_path, registry)
    doc = document(root)
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["title"] == reg.title
    channels = doc["channels"]
    assert channels["events"]["address"] == reg.events_topic.name
    assert channels["deadLetters"]["address"] == reg.dead_letter_topic.name
    assert list(channels["events"]["messages"]) == [e.name for e in reg.events]
    assert doc["servers"]["kafka"]["protocol"] == "kafka"
    key_field = next(f for f in reg.events[0].fields if f.name == reg.key)
    for e in reg.events:
        message = doc["components"]["messages"][e.name]
        headers = message["headers"]
        assert headers["required"] == list(ENGINE_REQUIRED_HEADERS)
        assert headers["properties"]["ce_type"]["const"] == e.name
        urn = f"urn:saga:{reg.name}:{e.name}:v{e.version}"
        assert headers["properties"]["ce_dataschema"]["const"] == urn
        assert message["payload"] == e.payload_schema()
        assert message["contentType"] == "application/json"
        assert message["summary"] == " ".join(e.stage_en.split())
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        if key_field.type == "string":
            assert message["bindings"]["kafka"]["key"].get("pattern") == key_field.pattern
        correlation = message["correlationId"]["$ref"].rsplit("/", 1)[1]
        location = doc["components"]["correlationIds"][correlation]["location"]
        assert location == "$message.header#/ce_correlationid"


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda p: p.stem)
def test_operations_are_what_each_service_sends_and_receives(
    registry: Path, tmp_path: Path
) -> None:
    reg, root = generated(tmp_path, registry)
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
            assert op["messages"] == [{"$ref": f"#/channels/events/messages/{r.event}"}]
            assert op["x-saga-emits"] == list(r.emits)
            assert op.get("x-saga-defer", False) == r.defer


def test_a_version_above_one_makes_ce_dataschema_required(tmp_path: Path) -> None:
    data = orders_data()
    data["events"]["PaymentFailed"]["version"] = 2
    data["events"]["PaymentFailed"]["upcast"] = [{"from": 1, "rename": {"why": "reason"}}]
    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    reg, root = generated(tmp_path, path)
    assert reg.event("PaymentFailed").version == 2
    headers = document(root)["components"]["messages"]["PaymentFailed"]["headers"]
    assert "ce_dataschema" in headers["required"]
    urn = headers["properties"]["ce_dataschema"]["const"]
    assert urn == f"urn:saga:{reg.name}:PaymentFailed:v2"
    assert (root / "docs" / "schemas" / "PaymentFailed.v2.json").exists()


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


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda p: p.stem)
def test_every_schema_file_is_a_valid_2020_12_schema_named_by_its_dataschema(
    registry: Path, tmp_path: Path
) -> None:
    reg, root = generated(tmp_path, registry)
    folder = root / "docs" / "schemas"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{e.name}.v{e.version}.json" for e in reg.events
    )
    for e in reg.events:
        schema = json.loads((folder / f"{e.name}.v{e.version}.json").read_text("utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == DRAFT
        assert schema["$id"] == f"urn:saga:{reg.name}:{e.name}:v{e.version}"
        assert schema["required"] == [f.name for f in e.fields if f.required]


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
