"""`saga codegen`: deterministic output, --check, the generation gap, typed events."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from saga_registry.cli.main import main
from saga_registry.codegen import check, write
from saga_registry.registry import load_registry
from tests.helpers import ORDERS, ORDERS_PATHS, ROOT, orders_data, run_generated, write_yaml

needs_dot = pytest.mark.usefixtures("dot_installed")


def generate(root: Path, registry: Path = ORDERS) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write(load_registry(registry), registry, root)


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def project_copy(tmp_path: Path) -> Path:
    """A copy of the registry in a fresh project root, generated once."""
    root = tmp_path / "project"
    (root / "registry").mkdir(parents=True)
    shutil.copy(ORDERS, root / "registry" / "saga.yaml")
    generate(root, root / "registry" / "saga.yaml")
    return root


def test_output_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b
    assert "handlers/events.py" in a and "docs/diagrams/state_machine.dot" in a


def test_committed_files_are_current() -> None:
    """What is in the repository is what the registry generates (CI runs the same)."""
    result = subprocess.run(
        [sys.executable, "-m", "saga_registry", "codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_names_stale_files_after_a_registry_edit(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    registry = root / "registry" / "saga.yaml"
    runner = CliRunner()
    args = ["codegen", "--registry", str(registry), "--out", str(root), "--check"]
    assert runner.invoke(main, args).exit_code == 0
    registry.write_text(
        registry.read_text().replace(
            "eta_days: {type: integer, minimum: 0, maximum: 365}",
            "eta_days: {type: integer, minimum: 1, maximum: 365}",
        )
    )
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "stale: handlers/events.py: differs from what the registry generates" in result.output
    assert "out of date: run `saga codegen`" in result.output


def test_check_notices_a_hand_edit_of_a_generated_file(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    events = root / "handlers" / "events.py"
    events.write_text(events.read_text() + "\n# tweak\n")
    stale = check(load_registry(root / "registry/saga.yaml"), root / "registry/saga.yaml", root)
    assert stale == ["handlers/events.py: differs from what the registry generates"]


def test_owned_service_modules_are_never_overwritten(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    mine = root / "handlers" / "payment.py"
    mine.write_text("# my own payment code\n")
    data = orders_data()
    data["events"]["PaymentSucceeded"]["payload"]["properties"]["note"] = {"type": "string"}
    registry = write_yaml(root / "registry" / "saga.yaml", data)
    report = write(load_registry(registry), registry, root)
    assert mine.read_text() == "# my own payment code\n"
    assert "handlers/payment.py" in report.unchanged
    assert "handlers/events.py" in report.written


def test_removed_service_leaves_no_stale_generated_file(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    data = orders_data()
    del data["services"]["Cart"]
    registry = write_yaml(root / "registry" / "saga.yaml", data)
    reg = load_registry(registry)
    assert "handlers/base/cart.py: no longer generated" in check(reg, registry, root)
    report = write(reg, registry, root)
    assert "handlers/base/cart.py" in report.removed
    assert not (root / "handlers/base/cart.py").exists()
    assert (root / "handlers/cart.py").exists(), "owned code is never deleted"
    assert check(reg, registry, root) == []


def test_events_round_trip_and_validate(tmp_path: Path) -> None:
    generate(tmp_path)
    code = textwrap.dedent(
        """
        import pydantic
        from handlers.events import EVENT_TYPES, OrderCreated, PaymentFailed
        import handlers.events
        assert handlers.events.__file__.startswith(ROOT), handlers.events.__file__
        order = OrderCreated(order_id="o-1", customer_id="c-1", total=300, currency="EUR",
                             items=[{"sku": "apple", "quantity": 3, "unit_price": 100}])
        data = order.to_json()
        assert OrderCreated.from_json(data) == order
        assert EVENT_TYPES["OrderCreated"] is OrderCreated
        assert OrderCreated.kind == "domain" and OrderCreated.producer == "OMS"
        assert order.saga_id() == "o-1"
        bad = [
            b'{"order_id": "o", "customer_id": "c", "items": [], "total": 1, "currency": "EUR"}',
            b'{"order_id": "o", "customer_id": "c", "items": [{"sku": "a", "quantity": 1,'
            b' "unit_price": 1}], "total": "1", "currency": "EUR"}',
            b'{"order_id": "o", "customer_id": "c", "items": [{"sku": "a", "quantity": 1,'
            b' "unit_price": 1}], "total": -1, "currency": "EUR"}',
            b'{"order_id": "o", "customer_id": "c", "items": [{"sku": "a", "quantity": 1,'
            b' "unit_price": 1}], "total": 1, "currency": "XXX"}',
            b'{"order_id": "o", "customer_id": "c", "items": [{"sku": "a", "quantity": 1,'
            b' "unit_price": 1}], "total": 1, "currency": "EUR", "extra": 1}',
            b'{"customer_id": "c", "items": [{"sku": "a", "quantity": 1,'
            b' "unit_price": 1}], "total": 1, "currency": "EUR"}',
        ]
        for raw in bad:
            try:
                OrderCreated.from_json(raw)
            except pydantic.ValidationError:
                continue
            raise SystemExit(f"accepted invalid payload {raw!r}")
        try:
            order.total = 5
        except pydantic.ValidationError:
            pass
        else:
            raise SystemExit("events are mutable")
        failed = PaymentFailed(order_id="o-1", reason="bank_error")
        assert failed.to_json() == b'{"order_id":"o-1","reason":"bank_error"}'
        print("ok")
        """
    )
    result = run_generated(tmp_path, f"ROOT = {str(tmp_path)!r}\n" + code)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "ok"


def test_new_reaction_shows_up_as_missing_method_at_start(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    (root / "handlers" / "logistics.py").write_text(
        textwrap.dedent(
            """
        from handlers.base.logistics import LogisticsBase
        from handlers.events import DeliveryScheduled

        class Logistics(LogisticsBase):
            async def on_payment_succeeded(self, event, ctx) -> DeliveryScheduled:
                raise NotImplementedError
        """
        )
    )
    ok = run_generated(root, "from handlers.logistics import Logistics; Logistics()")
    assert ok.returncode == 0, ok.stderr
    data = orders_data()
    data["services"]["Logistics"]["reacts"]["OrderCancelled"] = {"emits": []}
    registry = write_yaml(root / "registry" / "saga.yaml", data)
    write(load_registry(registry), registry, root)
    broken = run_generated(root, "from handlers.logistics import Logistics; Logistics()")
    assert broken.returncode != 0
    assert "abstract method" in broken.stderr and "on_order_cancelled" in broken.stderr


def test_type_checker_catches_a_missing_reaction(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    (root / "handlers" / "logistics.py").write_text(
        textwrap.dedent(
            """
        from handlers.base.logistics import LogisticsBase


        class Logistics(LogisticsBase):
            pass


        SERVICE = Logistics()
        """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--ignore-missing-imports",
            "handlers/logistics.py",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": f"{root}:{ROOT}", "PATH": "/usr/bin:/bin", "MYPYPATH": str(ROOT)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Cannot instantiate abstract class "Logistics"' in result.stdout
    assert "on_payment_succeeded" in result.stdout


def test_reaction_return_types_are_the_registry_emits(tmp_path: Path) -> None:
    generate(tmp_path)
    code = textwrap.dedent(
        """
        import typing
        from handlers.base.inventory import InventoryBase
        from handlers.base.order_history import OrderHistoryBase
        from handlers.events import InventoryReserved, InventoryReservationFailed

        hints = typing.get_type_hints(InventoryBase.on_order_created)
        assert set(typing.get_args(hints["return"])) == {InventoryReserved,
                                                         InventoryReservationFailed}
        assert typing.get_type_hints(OrderHistoryBase.on_order_cancelled)["return"] is type(None)
        assert InventoryBase.reactions["PaymentFailed"] == ("InventoryReleased",)
        print("ok")
        """
    )
    result = run_generated(tmp_path, code)
    assert result.returncode == 0, result.stderr


@needs_dot
def test_diagrams_show_every_event_with_its_kind(tmp_path: Path) -> None:
    generate(tmp_path)
    diagrams = tmp_path / "docs" / "diagrams"
    names = {p.name for p in diagrams.iterdir()}
    expected = [
        "choreography",
        "state_machine",
        "outcome_completed",
        "outcome_cancelled_after_inventory_reservation_failed",
        "outcome_cancelled_after_payment_failed",
        "outcome_cancelled_after_delivery_failed",
    ]
    for stem in expected:
        assert {f"{stem}.dot", f"{stem}.svg"} <= names, names
    reg = load_registry(ORDERS)
    svg = (diagrams / "choreography.svg").read_text()
    for event in reg.events:
        assert f"{event.name}" in svg and f"({event.kind})" in svg
        assert f"{event.name}\n({event.kind})" in (diagrams / "choreography.dot").read_text()


@needs_dot
def test_outcome_diagrams_follow_each_compensation_chain(tmp_path: Path) -> None:
    generate(tmp_path)
    diagrams = tmp_path / "docs" / "diagrams"
    for name, events in ORDERS_PATHS.items():
        dot = (diagrams / f"outcome_{name}.dot").read_text()
        for i, event in enumerate(events, 1):
            assert f"{i}. {event} (" in dot, (name, event)
        assert f"{len(events) + 1}. " not in dot


@needs_dot
def test_svg_is_stale_when_its_source_changes(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    svg = root / "docs" / "diagrams" / "state_machine.svg"
    svg.write_bytes(svg.read_bytes().replace(b"source-sha256: ", b"source-sha256: 0", 1)[:-1])
    reg = load_registry(root / "registry/saga.yaml")
    stale = check(reg, root / "registry/saga.yaml", root)
    assert stale == ["docs/diagrams/state_machine.svg: rendered from an older source"]
    write(reg, root / "registry/saga.yaml", root)
    assert check(reg, root / "registry/saga.yaml", root) == []


def test_without_dot_the_sources_are_still_written(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    report = write(load_registry(ORDERS), ORDERS, root, render=False)
    assert (root / "docs/diagrams/choreography.dot").exists()
    assert "docs/diagrams/choreography.svg" in report.not_rendered
    assert not (root / "docs/diagrams/choreography.svg").exists()


def test_large_overviews_switch_to_a_scalable_layout(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench_codegen
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    registry = tmp_path / "big.yaml"
    bench_codegen.write_generated(registry, 400, 40)
    write(load_registry(registry), registry, tmp_path, render=False)
    diagrams = tmp_path / "docs" / "diagrams"
    assert "layout=sfdp" in (diagrams / "choreography.dot").read_text()
    assert "layout=sfdp" in (diagrams / "state_machine.dot").read_text()
    outcome = next(diagrams.glob("outcome_*.dot")).read_text()
    assert "layout=" not in outcome, "chains keep dot's layout"
    small = tmp_path / "small"
    generate(small)
    assert "layout=" not in (small / "docs/diagrams/choreography.dot").read_text()
