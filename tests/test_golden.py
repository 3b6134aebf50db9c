"""Golden records of the generator, and the engine's tests kept apart from the checkout.

tests/golden/<name>/ is the committed output of `saga codegen` for each registry
tests/registries/<name>.yaml (package `<name>`, no SVGs, no test scaffold). After a change
to the generator, regenerate them with, for each registry:

    saga codegen --registry tests/registries/NAME.yaml --out tests/golden/NAME \\
        --package NAME --no-render --no-tests

and review the diff: it is what every user's generated code will become.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from saga_registry.cli.main import main
from tests.helpers import GOLDEN, ROOT

REGISTRIES = sorted((ROOT / "tests" / "registries").glob("*.yaml"))

# The checkout project's own tests: they may read registry/saga.yaml and import its
# `handlers`; every other test of the engine runs on tests/registries/.
CHECKOUT_TESTS = {
    "test_bench.py",
    "test_chaos.py",
    "test_check.py",
    "test_checkout.py",
    "test_checkout_processes.py",
    "test_checkout_tracing.py",
    "test_demo.py",
    "test_diff.py",
    "test_outcomes.py",
    "test_registries.py",
}


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda p: p.stem)
def test_golden_output_is_what_codegen_generates(registry: Path) -> None:
    out = GOLDEN / registry.stem
    assert out.is_dir(), f"no golden output for {registry.name}: see this module's docstring"
    args = ["codegen", "--registry", str(registry), "--out", str(out), "--package", registry.stem]
    result = CliRunner().invoke(main, [*args, "--no-render", "--no-tests", "--check"])
    assert result.exit_code == 0, result.output


def test_every_golden_folder_belongs_to_a_registry() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == [p.stem for p in REGISTRIES]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
            if node.module == "tests.helpers":
                found |= {f"tests.helpers.{alias.name}" for alias in node.names}
    return found


def test_the_engine_s_tests_do_not_depend_on_the_checkout() -> None:
    """Editing registry/saga.yaml or handlers/ must break only the checkout's own tests:
    no other test module imports the checkout's `handlers`, `bench` or `chaos`, or the
    checkout registry's path."""
    offenders = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in CHECKOUT_TESTS or path.name == "helpers.py":
            continue
        used = _imports(path) & {"handlers", "bench", "chaos", "tests.helpers.CHECKOUT"}
        if used:
            offenders[path.name] = sorted(used)
    assert offenders == {}
