"""Helpers shared by the tests: registry files to mutate, and running generated code."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from saga_registry.registry.source import load_document

ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = ROOT / "registry" / "saga.yaml"
TRIP = ROOT / "tests" / "registries" / "trip_booking.yaml"

CHECKOUT_PATHS: dict[str, list[str]] = {
    "completed": ["OrderCreated", "InventoryReserved", "PaymentSucceeded", "DeliveryScheduled"],
    "cancelled_after_inventory_reservation_failed": [
        "OrderCreated",
        "InventoryReservationFailed",
        "OrderCancelled",
    ],
    "cancelled_after_payment_failed": [
        "OrderCreated",
        "InventoryReserved",
        "PaymentFailed",
        "InventoryReleased",
        "OrderCancelled",
    ],
    "cancelled_after_delivery_failed": [
        "OrderCreated",
        "InventoryReserved",
        "PaymentSucceeded",
        "DeliveryFailed",
        "RefundSucceeded",
        "InventoryReleased",
        "OrderCancelled",
    ],
}
"""The checkout's outcome paths in the order the checkout lists them: each failure's compensations
come before `OrderCancelled`."""


def checkout_data() -> dict[str, Any]:
    """The checkout registry as plain data, to mutate in a test."""
    # Read as codegen reads it: PyYAML alone would turn the `on:` keys into True.
    data: dict[str, Any] = load_document(CHECKOUT).data
    return copy.deepcopy(data)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Dump `data` as a block-style registry file at `path`."""
    path.write_text(
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False),
        encoding="utf-8",
    )
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """The 1-based number of the line holding the `occurrence`-th `needle`."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def run_generated(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports the `handlers` package under `root`
    (and the project's `engine`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
