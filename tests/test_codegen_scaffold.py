"""`saga codegen`: the package option, checks without Graphviz, spelling-independent
headers, all-or-nothing runs, unwritten reactions, and the outcome test scaffold."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from saga_registry.cli.main import main
from saga_registry.codegen import check, unwritten_reactions, write
from saga_registry.codegen.output import OUTCOME_TESTS, STAGING_PREFIX
from saga_registry.codegen.owned import OwnedModuleUnreadable
from saga_registry.engine import ServiceBase
from saga_registry.registry import load_registry
from saga_registry.registry.errors import RenderError
from saga_registry.registry.outcomes import outcome_paths
from tests.helpers import GOLDEN, ORDERS, ROOT, TRIP, orders_data, run_generated, write_yaml


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def project(tmp_path: Path, name: str = "project") -> tuple[Path, Path]:
    """A fresh project root holding a copy of the checkout registry, generated once
    without SVGs; its root and registry."""
    root = tmp_path / name
    (root / "registry").mkdir(parents=True)
    registry = root / "registry" / "saga.yaml"
    shutil.copy(ORDERS, registry)
    write(load_registry(registry), registry, root, render=False)
    return root, registry


def codegen(
    *args: str | Path, cwd: Path, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`saga codegen ARGS` in a fresh interpreter, with PATH set to `path` if given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "saga_registry", "codegen", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- generated bases and the package option ---------------------------------------------


def test_generated_bases_subclass_the_engine_service_base(tmp_path: Path) -> None:
    from orders.base.payment import PaymentBase
    from orders.payment import Payment

    assert issubclass(PaymentBase, ServiceBase) and issubclass(Payment, ServiceBase)
    assert PaymentBase.__abstractmethods__ == {"on_inventory_reserved", "on_delivery_failed"}
    source = (GOLDEN / "orders" / "orders" / "base" / "payment.py").read_text()
    assert "from saga_registry.engine import ReactionContext, ServiceBase" in source


def test_package_option_generates_an_importable_package(tmp_path: Path) -> None:
    out = tmp_path / "copy"
    result = CliRunner().invoke(
        main,
        ["codegen", "--registry", str(ORDERS), "--out", str(out), "--package", "shop2"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert not (out / "handlers").exists()
    for path in (out / "shop2").rglob("*.py"):
        assert "handlers" not in path.read_text(), path
    code = textwrap.dedent(
        """
        import importlib
        from saga_registry.engine import ServiceBase
        from shop2.base import SERVICE_MODULES
        from shop2.events import OrderCreated
        assert SERVICE_MODULES["Payment"] == "shop2.payment", SERVICE_MODULES
        for name, module in SERVICE_MODULES.items():
            cls = getattr(importlib.import_module(module), name)
            assert issubclass(cls, ServiceBase) and cls.service_name == name
            cls()
        print("ok")
        """
    )
    ran = run_generated(out, code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ok"
    assert "from shop2.events import (" in (out / OUTCOME_TESTS).read_text()


def test_package_must_be_an_identifier(tmp_path: Path) -> None:
    for bad in ("my-shop", "shop.core", "class", ""):
        result = CliRunner().invoke(
            main, ["codegen", "--registry", str(ORDERS), "--out", str(tmp_path), "--package", bad]
        )
        assert result.exit_code == 2, result.output
        assert result.output == f"--package {bad!r}: not a Python identifier\n"
    assert list(tmp_path.iterdir()) == []


# -- --check without rendering ------------------------------------------------------------


def test_check_without_dot_checks_the_sources_and_says_so(tmp_path: Path) -> None:
    root, registry = project(tmp_path)  # no SVG was rendered
    empty = tmp_path / "bin"
    empty.mkdir()
    args = ("--check", "--registry", registry, "--out", root)
    with_dot = codegen(*args, cwd=tmp_path)
    if shutil.which("dot"):
        assert with_dot.returncode == 1 and "choreography.svg: missing" in with_dot.stderr
    no_dot = codegen(*args, cwd=tmp_path, path=str(empty))
    assert no_dot.returncode == 0, no_dot.stderr
    assert no_dot.stderr.count("note: SVGs not checked") == 1
    assert "Graphviz 'dot' is not on PATH" in no_dot.stderr
    dot = root / "docs" / "diagrams" / "state_machine.dot"
    dot.write_text(dot.read_text() + "// edited\n")
    stale = codegen(*args, cwd=tmp_path, path=str(empty))
    assert stale.returncode == 1
    assert "stale: docs/diagrams/state_machine.dot: differs" in stale.stderr


def test_check_with_no_render_ignores_svgs_but_not_python(tmp_path: Path) -> None:
    root, registry = project(tmp_path)
    args = ["codegen", "--check", "--no-render", "--registry", str(registry), "--out", str(root)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "note: SVGs not checked (--no-render); their .dot sources were" in result.output
    events = root / "handlers" / "base" / "payment.py"
    events.write_text(events.read_text() + "# tweak\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "stale: handlers/base/payment.py: differs" in result.output
    assert check(load_registry(registry), registry, root, svgs=False) == [
        "handlers/base/payment.py: differs from what the registry generates"
    ]


# -- headers independent of how paths are spelled ---------------------------------------


def test_output_does_not_depend_on_how_the_registry_path_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, registry = project(tmp_path, "x")
    expected = tree(root)
    assert "from registry/saga.yaml (sha256" in expected["handlers/events.py"].decode()
    (tmp_path / "link").symlink_to(root)
    (tmp_path / "elsewhere").mkdir()
    spellings = [
        (root, "registry/saga.yaml", "."),
        (tmp_path / "elsewhere", "../x/registry/saga.yaml", "../x"),
        (tmp_path, str(registry), str(root)),
        (tmp_path, "link/registry/saga.yaml", "link"),
        (tmp_path, "x/registry/saga.yaml", "link/"),
        (tmp_path / "link" / "handlers", "../registry/saga.yaml", ".."),
    ]
    for cwd, reg, out in spellings:
        monkeypatch.chdir(cwd)
        report = write(load_registry(Path(reg)), Path(reg), Path(out), render=False)
        assert report.written == [] and report.removed == [], (reg, out, report)
        assert tree(root) == expected, (reg, out)


def test_a_registry_outside_the_project_is_named_by_its_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    registry = shared / "saga.yaml"
    shutil.copy(ORDERS, registry)
    (tmp_path / "link").symlink_to(shared)
    outputs = []
    for cwd, reg, out in [
        (tmp_path, "shared/saga.yaml", "a"),
        (tmp_path / "shared", "saga.yaml", "../b/deeper/still"),
        (tmp_path, str(tmp_path / "link" / "saga.yaml"), str(tmp_path / "c")),
    ]:
        monkeypatch.chdir(cwd)
        write(load_registry(Path(reg)), Path(reg), Path(out), render=False)
        outputs.append(tree((cwd / out).resolve()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert "from saga.yaml (sha256" in outputs[0]["handlers/events.py"].decode()


# -- all or nothing ----------------------------------------------------------------------


def test_a_failing_render_leaves_the_previous_files_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, registry = project(tmp_path)
    data = orders_data()
    data["events"]["PaymentSucceeded"]["payload"]["properties"]["note"] = {"type": "string"}
    write_yaml(registry, data)
    before = tree(root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dot = bin_dir / "dot"
    dot.write_text("#!/bin/sh\ncat >/dev/null\necho 'dot: out of memory' >&2\nexit 1\n")
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RenderError, match="out of memory"):
        write(load_registry(registry), registry, root)
    assert tree(root) == before
    assert not [p for p in root.iterdir() if p.name.startswith(STAGING_PREFIX)]
    result = CliRunner().invoke(main, ["codegen", "--registry", str(registry), "--out", str(root)])
    assert result.exit_code == 1
    assert result.output == "error: dot failed: dot: out of memory\n"
    assert tree(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["docs", "handlers", "registry", "tests"]


# -- unwritten reactions -----------------------------------------------------------------


def test_unwritten_reactions_reads_the_module_without_importing_it(tmp_path: Path) -> None:
    module = tmp_path / "payment.py"
    module.write_text(
        textwrap.dedent(
            '''
            import this_package_does_not_exist

            class Payment(Base):
                async def on_a(self, event, ctx):
                    """Not yet."""
                    raise NotImplementedError("Payment.on_a is not written yet")

                async def on_b(self, event, ctx):
                    raise NotImplementedError

                async def on_c(self, event, ctx):
                    if event.x:
                        raise NotImplementedError
                    return None

                on_d = on_c
            '''
        )
    )
    methods = ["on_a", "on_b", "on_c", "on_d", "on_e", "on_f"]
    assert unwritten_reactions(module, "Payment", methods) == (["on_e", "on_f"], ["on_a", "on_b"])
    with pytest.raises(OwnedModuleUnreadable, match="defines no class Shipping"):
        unwritten_reactions(module, "Shipping", methods)
    module.write_text("class Payment(:\n")
    with pytest.raises(OwnedModuleUnreadable, match=r"not valid Python \(line 1\)"):
        unwritten_reactions(module, "Payment", methods)


def test_codegen_lists_the_reactions_a_registry_change_leaves_unwritten(tmp_path: Path) -> None:
    root, registry = project(tmp_path)
    logistics = root / "handlers" / "logistics.py"
    logistics.write_text(
        logistics.read_text().replace(
            "raise NotImplementedError('Logistics.on_payment_succeeded is not written yet')",
            "return None",
        )
    )
    data = orders_data()
    data["services"]["Logistics"]["reacts"]["OrderCancelled"] = {"emits": []}
    data["services"]["Logistics"]["reacts"]["PaymentFailed"] = {"emits": ["DeliveryFailed"]}
    write_yaml(registry, data)
    args = ["codegen", "--no-render", "--registry", str(registry), "--out", str(root)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (
        "note: handlers/logistics.py: Logistics lacks 2 reactions; add:\n"
        "    async def on_order_cancelled(self, event: OrderCancelled, ctx: ReactionContext)"
        " -> None: ...\n"
        "    async def on_payment_failed(self, event: PaymentFailed, ctx: ReactionContext)"
        " -> DeliveryFailed: ...\n"
    ) in result.stdout
    assert (
        "note: handlers/payment.py: Payment has 2 reactions not written yet (still raising"
        " NotImplementedError): on_inventory_reserved, on_delivery_failed\n"
    ) in result.stdout
    assert "handlers/logistics.py: Logistics has" not in result.stdout
    checked = CliRunner().invoke(main, [*args, "--check"])
    assert checked.exit_code == 0, checked.stderr
    assert "Logistics lacks 2 reactions" in checked.stdout


# -- the outcome test scaffold -----------------------------------------------------------


def test_outcome_test_scaffold_has_one_test_per_outcome_path(tmp_path: Path) -> None:
    root, _ = project(tmp_path)
    source = (root / OUTCOME_TESTS).read_text()
    outcomes, _ = outcome_paths(load_registry(ORDERS))
    tests = [n.name for n in ast.parse(source).body if isinstance(n, ast.AsyncFunctionDef)]
    assert tests == [f"test_{o.name}" for o in outcomes] and len(tests) == 4
    assert "from saga_registry.testing import SagaHarness\n" in source
    assert "from handlers.events import (\n    OrderCreated,  # noqa: F401\n)\n" in source
    assert "This file is yours" in ast.get_docstring(ast.parse(source), clean=True)  # type: ignore[operator]
    assert (
        "async def test_completed(saga: SagaHarness) -> None:\n"
        '    """Outcome `completed`: OrderCreated -> InventoryReserved -> PaymentSucceeded'
        ' -> DeliveryScheduled."""\n'
        "    # Fill in the event that starts a saga taking this path; before starting, make a\n"
        "    # reaction fail with saga.fail(SERVICE, EVENT) or plan a deadline with"
        " saga.advance(S)\n"
        "    # where the path needs it. Until then this test fails and says so.\n"
        '    stimulus = None  # e.g. OrderCreated(order_id="o1", ...)\n'
        '    await saga.run_outcome("completed", stimulus)\n'
    ) in source


def test_outcome_test_scaffold_is_written_once_and_optional(tmp_path: Path) -> None:
    root, registry = project(tmp_path)
    scaffold = root / OUTCOME_TESTS
    scaffold.write_text("# my outcome tests\n")
    report = write(load_registry(registry), registry, root, render=False)
    assert scaffold.read_text() == "# my outcome tests\n"
    assert OUTCOME_TESTS.as_posix() in report.unchanged
    scaffold.unlink()
    reg = load_registry(registry)
    assert check(reg, registry, root, svgs=False) == [], "a deleted scaffold is not stale"
    args = ["codegen", "--no-render", "--no-tests", "--registry", str(registry), "--out", str(root)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert not scaffold.exists()
    write(reg, registry, root, render=False)
    assert scaffold.exists()


def test_a_registry_file_name_cannot_write_lines_into_generated_code(tmp_path: Path) -> None:
    hostile = tmp_path / "x\nimport os; os.system('echo owned')\n.yaml"
    shutil.copy(ORDERS, hostile)
    out = tmp_path / "out"
    write(load_registry(hostile), hostile, out, render=False)
    events = (out / "handlers" / "events.py").read_text()
    assert "\nimport os" not in events
    assert events.splitlines()[0].startswith("# Generated by `saga codegen` from x\\nimport os")


def test_codegen_names_the_modules_of_services_the_registry_dropped(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "saga_registry", "init", "proj"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    root = tmp_path / "proj"
    shutil.copy(TRIP, root / "registry" / "saga.yaml")
    result = CliRunner().invoke(
        main, ["codegen", "--registry", str(root / "registry" / "saga.yaml"), "--out", str(root)]
    )
    assert result.exit_code == 0, result.output
    for module in ("accounts", "billing", "signup"):
        note = (
            f"note: handlers/{module}.py: imports handlers.base.{module}, the base of a "
            "service no longer in the registry; delete the module if it was that service's"
        )
        assert (note in result.output) == (module != "billing"), result.output
