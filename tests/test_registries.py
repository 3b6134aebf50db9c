"""The checkout registry carries the seed; a second registry proves nothing is
checkout-specific."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from saga_registry.cli.main import main
from saga_registry.codegen import check, write
from saga_registry.registry import load_registry
from saga_registry.registry.outcomes import outcome_paths
from tests.helpers import CHECKOUT, CHECKOUT_PATHS, TRIP, run_generated

# The table of the checkout process (docs/checkout.md): event, kind, English stage text.
SEED = [
    ("OrderCreated", "domain", "The customer creates an order (assembly starts)"),
    ("InventoryReserved", "domain", "Goods successfully reserved in the warehouse"),
    (
        "InventoryReservationFailed",
        "failure",
        "Cart total did not match, or the goods are out of stock",
    ),
    ("PaymentSucceeded", "domain", "Order paid successfully"),
    ("PaymentFailed", "failure", "Payment error (insufficient funds / bank error)"),
    ("OrderCancelled", "compensation", "Order cancelled (compensation in the state machine)"),
    (
        "InventoryReleased",
        "compensation",
        "Warehouse reservation cancelled (goods back on the shelf)",
    ),
    ("RefundSucceeded", "compensation", "Money returned (if the cancellation came after payment)"),
    ("DeliveryScheduled", "domain", "Delivery request created successfully"),
    ("DeliveryFailed", "failure", "Delivery unsuccessful / logistics provider error"),
]


def test_checkout_registry_carries_every_row_of_the_seed() -> None:
    reg = load_registry(CHECKOUT)
    assert [(e.name, e.kind, e.stage_en) for e in reg.events] == SEED
    assert all(dict(e.stage).get("ru") for e in reg.events)
    assert [s.name for s in reg.services] == [
        "OMS",
        "Cart",
        "Inventory",
        "Payment",
        "Logistics",
        "OrderHistory",
    ]
    assert reg.key == "order_id"
    assert reg.service("OMS").initiates == ("OrderCreated",)


def test_every_failure_ends_in_order_cancelled_after_its_compensations() -> None:
    reg = load_registry(CHECKOUT)
    paths = {o.name: [s.event for s in o.steps] for o in outcome_paths(reg)[0]}
    assert paths == CHECKOUT_PATHS
    terminal_events = {"DeliveryScheduled", "OrderCancelled"}
    history = {r.event for r in reg.service("OrderHistory").reactions}
    assert terminal_events <= history


def test_second_registry_validates_and_generates(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(TRIP)])
    assert result.exit_code == 0, result.output
    reg = load_registry(TRIP)
    assert reg.key != "order_id"
    write(reg, TRIP, tmp_path, render=False)
    assert check(reg, TRIP, tmp_path) == [
        f"docs/diagrams/{p.stem}.svg: missing"
        for p in sorted(
            (tmp_path / "docs/diagrams").glob("*.dot"), key=lambda p: _order(reg, p.stem)
        )
    ]
    modules = ", ".join(s.module for s in reg.services)
    first = reg.events[0]
    code = textwrap.dedent(
        f"""
        import handlers.events as ev
        from handlers import {modules}
        cls = ev.EVENT_TYPES[{first.name!r}]
        assert cls.kind == {first.kind!r}
        assert ev.SAGA_KEY == {reg.key!r}
        print(len(ev.EVENT_TYPES))
        """
    )
    run = run_generated(tmp_path, code)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) == len(reg.events)
    kinds = {e.kind for e in reg.events}
    assert kinds == {"domain", "failure", "compensation"}
    assert len(outcome_paths(reg)[0]) >= 3


def _order(reg: object, stem: str) -> int:
    fixed = {"choreography": 0, "state_machine": 1}
    if stem in fixed:
        return fixed[stem]
    from saga_registry.registry.outcomes import outcome_paths as paths

    names = [f"outcome_{o.name}" for o in paths(reg)[0]]  # type: ignore[arg-type]
    return 2 + names.index(stem)
