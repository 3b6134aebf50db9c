"""The checkout saga as production runs it: each service in its own OS process on the real
Kafka broker, orders placed from the command line; every outcome, then the invariants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from handlers.faults import hit
from handlers.shop import Shop
from saga_registry.engine.app import Application
from saga_registry.engine.config import Settings
from tests.helpers import CHECKOUT, ROOT
from tests.test_checkout import CHAINS

SERVICES = ["OMS", "Cart", "Inventory", "Payment", "Logistics", "OrderHistory"]


def on_kafka(tmp_path: Path, bootstrap: str, base: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The checkout on Kafka at `bootstrap`, on topics and consumer groups of its own (a
    fresh tag names them; the registry is written to `tmp_path`), a database per service
    in `tmp_path`: the tag, and `base` with the `SAGA_*` variables every command reads."""
    tag = uuid.uuid4().hex[:8]
    registry = tmp_path / "saga.yaml"
    registry.write_text(
        CHECKOUT.read_text(encoding="utf-8")
        .replace("  name: checkout\n", f"  name: checkout_{tag}\n")
        .replace("name: checkout.events", f"name: t{tag}.checkout.events"),
        encoding="utf-8",
    )
    return tag, {
        **base,
        "SAGA_REGISTRY": str(registry),
        "SAGA_BUS": f"kafka://{bootstrap}",
        "SAGA_DB_URL": f"sqlite:///{tmp_path}/{{service}}.db",
        "SAGA_LOG_LEVEL": "WARNING",
    }


def saga_command(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`saga ARGS` run from the checkout's root in `env`, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "saga_registry", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ids(tag: str, failing: bool) -> str:
    """An order id the logistics provider (failing for half of all orders) fails or not."""
    for i in range(1000):
        oid = f"{tag}-{i}"
        if hit(oid, "provider", 0.5) == failing:
            return oid
    raise AssertionError("no such id")


def test_every_outcome_with_one_process_per_service_on_kafka(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    tag, env = on_kafka(tmp_path, kafka_bootstrap, os.environ)

    def saga(*args: str) -> subprocess.CompletedProcess[str]:
        return saga_command(env, *args)

    assert saga("shop", "seed").returncode == 0
    logs = [(tmp_path / f"{name}.log").open("w") for name in SERVICES]
    # Log files, not pipes: a service blocked writing into a full pipe would never stop.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "saga_registry",
                "run",
                name,
                "--set",
                "logistics.provider_failure=0.5",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, log in zip(SERVICES, logs, strict=True)
    ]
    try:
        orders = {
            "completed": ("c1", ["apple:2"], _ids(f"ok{tag}", False), []),
            "stock": ("c1", ["durian:1"], f"stock{tag}", ["--no-cart-check"]),
            "payment": ("p1", ["mango:1"], _ids(f"poor{tag}", False), []),
            "delivery": ("c2", ["pear:1"], _ids(f"dlv{tag}", True), []),
        }
        for customer, items, oid, extra in orders.values():
            placed = saga(
                "order",
                "place",
                "--customer",
                customer,
                "--id",
                oid,
                *extra,
                *(a for item in items for a in ("--item", item)),
            )
            assert placed.returncode == 0, placed.stderr
        refused = saga("order", "place", "--customer", "c1", "--item", "durian:1")
        assert refused.returncode == 1 and "cart refused: durian: 0 left" in refused.stderr
        history = tmp_path / "orderhistory.db"
        deadline = time.monotonic() + 120
        snapshots: dict[str, str] = {}
        while time.monotonic() < deadline and len(snapshots) < len(orders):
            if history.exists():
                # The table appears once OrderHistory has started.
                with (
                    sqlite3.connect(history, timeout=30) as conn,
                    contextlib.suppress(sqlite3.OperationalError),
                ):
                    snapshots = dict(conn.execute("SELECT order_id, snapshot FROM archive"))
            time.sleep(0.3)
        assert len(snapshots) == len(orders), f"archived: {sorted(snapshots)}"
        for outcome, (_, _, oid, _) in orders.items():
            shown = saga("history", oid)
            assert shown.returncode == 0, shown.stderr
            assert all(f'"{e}"' in shown.stdout for e in CHAINS[outcome]), (outcome, shown.stdout)
        traced = saga("trace", orders["delivery"][2], "--dot", str(tmp_path / "path.dot"))
        assert traced.returncode == 0, traced.stderr
        cancelled = next(ln for ln in traced.stdout.splitlines() if " OrderCancelled " in ln)
        assert "released -> cancelled" in cancelled and "OrderHistory: reacted" in cancelled
        drawn = (tmp_path / "path.dot").read_text()
        assert 'refunded -> released [label="6. InventoryReleased"' in drawn
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
        for log in logs:
            log.close()
    assert codes == [0] * len(SERVICES), [
        (tmp_path / f"{name}.log").read_text()[-2000:] for name in SERVICES
    ]

    async def invariants() -> object:
        app = Application(
            Settings(registry=env["SAGA_REGISTRY"], bus=env["SAGA_BUS"], db=env["SAGA_DB_URL"])
        )
        await app.start()
        try:
            return await Shop(app).report(len(orders))
        finally:
            await app.stop()

    report = asyncio.run(invariants())
    assert report.ok, report.invariants  # type: ignore[attr-defined]
