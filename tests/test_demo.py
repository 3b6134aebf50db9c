"""`saga demo`, as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

SAGA = [sys.executable, "-m", "saga_registry"]


def test_demo_reaches_every_outcome_and_checks_every_invariant() -> None:
    result = subprocess.run(
        [*SAGA, "demo", "--orders", "60", "--fail", "stock=0.2,payment=0.3,delivery=0.3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "completed" in out
    assert "cancelled: InventoryReservationFailed (out_of_stock)" in out
    assert "cancelled: PaymentFailed (" in out
    assert "cancelled: DeliveryFailed (provider_error)" in out
    for name in (
        "every saga ended: 60/60",
        "stock conserved",
        "money conserved",
        "none both delivered and cancelled",
        "one snapshot per order",
    ):
        assert f"ok   {name}" in out, out
    assert "FAIL" not in out


def test_demo_refuses_a_bad_failure_mix() -> None:
    result = subprocess.run(
        [*SAGA, "demo", "--fail", "meteor=0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "expected KIND=SHARE with KIND one of stock, payment, delivery, price" in result.stderr
