"""Hostile registries: names that try to become code or paths are refused; texts that try
to break out of their quotes are escaped. Generated code always compiles and runs
nothing from the YAML."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from saga_registry.codegen import write
from saga_registry.registry import RegistryInvalid, load_registry
from tests.helpers import orders_data, run_generated, write_yaml

PAYLOADS = [
    "'''\"\"\"); __import__('os').system('touch PWNED') #",
    "\\\"\nimport os; os.system('touch PWNED')\n\"",
    '}} {% raw %} {{ 7*7 }} " ] ; digraph x { a -> b } // <script>alert(1)</script>',
    "line\nbreaks\r\nand\ttabs \\N \\l \\\\",
]


@pytest.mark.parametrize(
    "bad",
    [
        "Order'Created",
        "Order\nCreated",
        "__import__",
        "../../etc/passwd",
        "Order.Created",
        "a/b",
        "Ok__import__('os')",
    ],
)
def test_names_that_could_escape_are_refused(tmp_path: Path, bad: str) -> None:
    data = orders_data()
    data["services"][bad] = data["services"].pop("Cart")
    path = write_yaml(tmp_path / "saga.yaml", data)
    with pytest.raises(RegistryInvalid) as info:
        load_registry(path)
    assert any(
        f"service name {bad!r} is not a valid name" in str(p) for p in info.value.problems
    ), info.value.problems
    assert not (tmp_path / "etc").exists()


def test_field_named_like_a_keyword_or_reserved_attribute_is_refused(tmp_path: Path) -> None:
    data = orders_data()
    props = data["events"]["DeliveryScheduled"]["payload"]["properties"]
    props["import"] = {"type": "string"}
    props["model_config"] = {"type": "string"}
    props["to_json"] = {"type": "string"}
    path = write_yaml(tmp_path / "saga.yaml", data)
    with pytest.raises(RegistryInvalid) as info:
        load_registry(path)
    text = str(info.value)
    assert "field name 'import' is a Python keyword" in text
    assert "field name 'model_config' is reserved" in text
    assert "field name 'to_json' is reserved" in text


def hostile_texts(data: dict[str, Any]) -> None:
    data["saga"]["title"] = PAYLOADS[2]
    for i, event in enumerate(data["events"].values()):
        event["stage"]["en"] = PAYLOADS[i % len(PAYLOADS)]
        event["description"] = PAYLOADS[(i + 1) % len(PAYLOADS)]
    for i, service in enumerate(data["services"].values()):
        service["description"] = PAYLOADS[i % len(PAYLOADS)]
    data["definitions"]["Id"]["description"] = PAYLOADS[0]
    data["events"]["OrderCreated"]["payload"]["properties"]["currency"] = {
        "type": "string",
        "enum": PAYLOADS[:2],
    }
    data["events"]["DeliveryScheduled"]["payload"]["properties"]["carrier"]["pattern"] = "^[^'\"]+$"


def test_hostile_texts_are_escaped_and_generated_code_runs_nothing(tmp_path: Path) -> None:
    data = orders_data()
    hostile_texts(data)
    registry = write_yaml(tmp_path / "saga.yaml", data)
    root = tmp_path / "out"
    root.mkdir()
    write(load_registry(registry), registry, root, render=shutil.which("dot") is not None)
    for path in root.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    code = (
        "import json, sys\n"
        "import handlers.events as ev, handlers.base as b\n"
        "from handlers import oms, cart, inventory, payment, logistics, order_history\n"
        "print(json.dumps([ev.OrderCreated.stage['en'], ev.InventoryReserved.description,"
        " list(ev.OrderCreated.model_fields['currency'].annotation.__args__)]))\n"
    )
    result = run_generated(root, code)
    assert result.returncode == 0, result.stderr
    import json

    stage, description, enum = json.loads(result.stdout)
    assert stage == PAYLOADS[0]
    assert description == PAYLOADS[2]
    assert enum == PAYLOADS[:2]
    assert not list(tmp_path.rglob("PWNED")), "a registry text was executed"
    if shutil.which("dot"):
        svg = (root / "docs/diagrams/choreography.svg").read_text()
        assert "<script>" not in svg, "a text reached the SVG unescaped"
