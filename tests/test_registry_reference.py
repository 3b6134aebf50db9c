"""docs/registry.md: rendered from the JSON Schema, committed up to date, its example valid."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from saga_registry.registry import load_registry
from saga_registry.registry.reference import MINIMAL_EXAMPLE, RULES, render_reference
from saga_registry.registry.structure import registry_schema
from tests.helpers import ROOT

DOC = ROOT / "docs" / "registry.md"
SCRIPT = ROOT / "scripts" / "registry_reference.py"


def _keys(node: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every key the schema declares (properties, at any depth, and in every definition)."""
    for name, child in node.get("properties", {}).items():
        yield f"{where}.{name}", child
        yield from _keys(child, f"{where}.{name}")
    for name, child in node.get("$defs", {}).items():
        yield f"$defs.{name}", child
        yield from _keys(child, f"$defs.{name}")


def test_committed_reference_is_the_render() -> None:
    # Editing the schema or the rules without running the script fails here.
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/registry.md is stale: run python scripts/registry_reference.py"
    )


def test_every_schema_key_is_described() -> None:
    undescribed = [
        path for path, node in _keys(registry_schema(), "") if not node.get("description")
    ]
    assert undescribed == []


def test_every_key_appears_in_the_reference_with_its_description() -> None:
    text = render_reference()
    for path, node in _keys(registry_schema(), ""):
        if path.startswith("$defs.") and path.count(".") == 1:
            continue  # a definition itself is described where it is used
        assert node["description"] in text, path
    for path in (
        "saga.key",
        "services.<Service>.reacts.<Event>.defer",
        "state_machine.transitions[].on",
        "state_machine.deadlines[].within_s",
        "<field>.pattern",
    ):
        assert f"`{path}`" in text, path


def test_minimal_example_is_a_valid_registry_and_is_in_the_reference() -> None:
    registry = load_registry("example.yaml", text=MINIMAL_EXAMPLE)
    assert {e.kind for e in registry.events} == {"domain", "failure", "compensation"}
    assert registry.state_machine.deadlines
    assert MINIMAL_EXAMPLE.rstrip("\n") in render_reference()


def test_every_rule_is_in_the_reference() -> None:
    text = render_reference()
    assert "## Rules the validator enforces" in text
    for topic, rules in RULES:
        assert f"### {topic}" in text
        for rule in rules:
            assert f"- {rule}\n" in text


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_script_check_names_a_stale_file_and_rewriting_fixes_it(tmp_path: Path) -> None:
    out = tmp_path / "registry.md"
    out.write_text("old\n", encoding="utf-8")
    stale = _script("--check", "--output", str(out))
    assert stale.returncode == 1
    assert str(out) in stale.stderr and "out of date" in stale.stderr
    assert out.read_text(encoding="utf-8") == "old\n"  # --check writes nothing
    assert _script("--output", str(out)).returncode == 0
    assert out.read_text(encoding="utf-8") == render_reference()
    fresh = _script("--check", "--output", str(out))
    assert fresh.returncode == 0, fresh.stderr


def test_script_check_passes_on_the_committed_file() -> None:
    result = _script("--check")
    assert result.returncode == 0, result.stderr
