"""Reliability: small chaos runs on both buses (services SIGKILLed and restarted, the Kafka
broker restarted, poison records written), a failed or slow broker restart ending in a
verdict all the same, and the checker shown to catch each kind of broken final state."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update

from chaos.checker import Verdict, check
from chaos.cluster import Broker, free_port
from chaos.run import Outcome, Plan, _broker
from handlers.inventory import stock
from handlers.oms import orders
from handlers.order_history import archive
from handlers.payment import accounts, ledger
from handlers.shop import Mix, Shop
from saga_registry.engine.app import Application
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.config import Settings
from saga_registry.engine.runner import RunnerSettings
from saga_registry.registry.loader import load_registry
from saga_registry.registry.projection import project
from tests.helpers import ROOT
from tests.runtime_kit import fresh_registry

KEYS = {
    "sagas",
    "terminal",
    "stuck",
    "lost",
    "double_charges",
    "double_refunds",
    "stock_conserved",
    "money_conserved",
    "snapshots_ok",
    "kills",
    "broker_restarts",
    "dlq",
}


def _chaos(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos", *args, "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(out.read_text()) if out.exists() else {}
    return done.returncode, report, done.stdout + done.stderr[-3000:]


def _assert_survived(code: int, report: dict[str, Any], output: str, sagas: int) -> None:
    assert code == 0, output
    assert report.keys() >= KEYS, output
    assert report["sagas"] == report["terminal"] == sagas, output
    assert (report["stuck"], report["lost"]) == (0, 0), output
    assert (report["double_charges"], report["double_refunds"]) == (0, 0), output
    assert report["stock_conserved"] and report["money_conserved"] and report["snapshots_ok"]
    # Every outcome happened, so every compensation chain ran under the kills.
    assert {"completed", "cancelled: out_of_stock", "cancelled: provider_error"} <= set(
        report["outcomes"]
    ), report["outcomes"]
    # Six kinds of poison per volley, each dead-lettered by every service that takes its
    # type in: every service that reads the topic (not Cart, which takes no event in) for
    # the records with no type, an unknown one, or no readable bytes, and the services that
    # take OrderCreated in for the three bad OrderCreated (the same five here).
    assert report["poison_sent"]["unreadable"] == 2, report["poison_sent"]
    projections = project(load_registry(ROOT / "registry/saga.yaml")).values()
    readers = sum(bool(p.events) for p in projections)
    takers = sum("OrderCreated" in p.events for p in projections)
    assert (readers, takers) == (5, 5)
    dead = (3 * readers + 3 * takers) * 2
    assert report["poison_dead_lettered"] and report["dlq"] >= dead, output


def test_chaos_on_the_embedded_bus_loses_and_doubles_nothing(tmp_path: Path) -> None:
    code, report, output = _chaos(
        tmp_path, "--bus", "embedded", "--sagas", "250", "--kills", "6", "--rate", "40",
        "--poison", "2", "--seed", "11",
    )  # fmt: skip
    _assert_survived(code, report, output, 250)
    assert report["kills"] == 6


def test_chaos_on_kafka_with_a_broker_restart_loses_and_doubles_nothing(
    tmp_path: Path, kafka_bootstrap: str, kcat: str
) -> None:
    # kafka_bootstrap only proves Kafka can run here: the run starts a broker of its own,
    # so that restarting it disturbs nothing else.
    code, report, output = _chaos(
        tmp_path, "--bus", "kafka", "--sagas", "250", "--kills", "6", "--broker-restarts", "1",
        "--rate", "40", "--poison", "2", "--seed", "12",
    )  # fmt: skip
    _assert_survived(code, report, output, 250)
    assert (report["kills"], report["broker_restarts"]) == (6, 1)


def test_a_service_started_before_its_broker_waits_for_it(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # A service restarted while the broker restarts must come up once the broker does,
    # not exit (`saga run --wait-for-bus`).
    broker = Broker(tmp_path / "kafka")
    env = {
        **os.environ,
        "SAGA_BUS": f"kafka://{broker.bootstrap}",
        "SAGA_DB_URL": f"sqlite:///{tmp_path}/{{service}}.db",
        "SAGA_WAIT_FOR_BUS": "120",
    }
    log = tmp_path / "cart.log"
    with log.open("w") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "saga_registry", "run", "Cart"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(3)
        assert service.poll() is None, log.read_text()
        broker.start()
        deadline = time.monotonic() + 60
        while "saga run: Cart on" not in log.read_text() and time.monotonic() < deadline:
            assert service.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "trying again" in log.read_text()
        assert "saga run: Cart on" in log.read_text(), log.read_text()
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=60)
        broker.stop()
    assert code == 0, log.read_text()


def test_chaos_refuses_a_broker_restart_without_kafka(tmp_path: Path) -> None:
    code, _, output = _chaos(tmp_path, "--bus", "embedded", "--broker-restarts", "1")
    assert code == 2 and "only a Kafka broker can be restarted" in output


# A failed or slow broker restart ends in a verdict, its JSON included: the failure is a
# problem of the report, not a reason to stop without one.


def test_a_broker_restart_that_fails_is_recorded_and_raises_nothing(
    java: None, tmp_path: Path
) -> None:
    # The restart finds its port taken by another program: scripts/kafka refuses to start.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = Broker(
            tmp_path / "kafka", port=squatter.getsockname()[1], controller_port=free_port()
        )
        plan = Plan("kafka", 10, broker_restarts=1, restart_timeout_s=30)
        outcome = Outcome(
            plan, Verdict(sagas=0, stock_conserved=True, money_conserved=True, snapshots_ok=True)
        )
        assert outcome.verdict.ok, "only the restart can fail this outcome"
        asyncio.run(_broker(broker, plan, random.Random(1), 0.1, time.monotonic(), outcome))
    (restart,) = outcome.broker_restarts
    assert restart.up_again_s is None
    assert restart.error is not None and "is taken by another program" in restart.error
    report = outcome.to_json()
    assert report["broker_restart_failures"] == 1 and report["broker_restarts"] == 1
    assert report["problems"][0].startswith("broker restart at ")
    assert "\n" not in report["problems"][0]
    assert not outcome.ok and report["ok"] is False


def test_a_slow_broker_restart_ends_in_a_verdict_with_the_failure_in_it(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # A restart may take 1 s: a broker takes longer, so the restart counts as failed. The
    # broker is not killed for it; it comes up, the run goes on and is judged.
    code, report, output = _chaos(
        tmp_path, "--bus", "kafka", "--sagas", "250", "--kills", "0", "--broker-restarts", "1",
        "--rate", "40", "--poison", "0", "--seed", "12", "--restart-timeout", "1",
    )  # fmt: skip
    assert code == 1, output
    assert report.keys() >= KEYS, output
    assert report["broker_restarts"] == 1 and report["broker_restart_failures"] == 1, output
    (restart,) = report["broker_restarted"]
    assert restart["up_again_s"] is None and "within 1 s" in restart["error"], restart
    assert any(p.startswith("broker restart at ") for p in report["problems"]), output
    assert "FAIL broker restart at " in output
    # The slow broker came up after all: nothing lost, stuck or doubled.
    assert report["sagas"] == report["terminal"] == 250, output
    assert (report["stuck"], report["lost"], report["double_charges"]) == (0, 0, 0), output


Tamper = Callable[[Shop, dict[str, str]], Awaitable[None]]


async def _in(shop: Shop, service: str, stmt: Any) -> None:
    async with shop.parts[service].db.transaction() as conn:
        await conn.execute(stmt)


async def _without_ledger_guard(shop: Shop) -> None:
    """Payment's ledger refuses a second charge or refund per order (a unique key); a
    Payment without that key is what the checker must catch, so rebuild the table bare."""
    async with shop.parts["Payment"].db.transaction() as conn:
        await conn.execute(text("CREATE TABLE bare AS SELECT * FROM ledger"))
        await conn.execute(text("DROP TABLE ledger"))
        await conn.execute(text("ALTER TABLE bare RENAME TO ledger"))


async def _double_charge(shop: Shop, ids: dict[str, str]) -> None:
    await _without_ledger_guard(shop)
    await _in(shop, "Payment", insert(ledger).values(
        order_id=ids["completed"], customer_id="c1", kind="charge", amount=1, currency="EUR"
    ))  # fmt: skip


async def _double_refund(shop: Shop, ids: dict[str, str]) -> None:
    await _without_ledger_guard(shop)
    await _in(shop, "Payment", insert(ledger).values(
        order_id=ids["refunded"], customer_id="c1", kind="refund", amount=1, currency="EUR"
    ))  # fmt: skip


async def _lose(shop: Shop, ids: dict[str, str]) -> None:
    await _in(shop, "OMS", delete(orders).where(orders.c.order_id == ids["refused"]))


async def _unarchive(shop: Shop, ids: dict[str, str]) -> None:
    await _in(shop, "OrderHistory", delete(archive).where(archive.c.order_id == ids["completed"]))


async def _reopen(shop: Shop, ids: dict[str, str]) -> None:
    await _in(shop, "OMS", update(orders).where(orders.c.order_id == ids["refused"]).values(
        status="placed"
    ))  # fmt: skip


async def _shrink_stock(shop: Shop, ids: dict[str, str]) -> None:
    await _in(shop, "Inventory", update(stock).where(stock.c.sku == "apple").values(
        on_hand=stock.c.on_hand - 1
    ))  # fmt: skip


async def _misbook(shop: Shop, ids: dict[str, str]) -> None:
    # A charge booked to the wrong customer, balances moved to match: every total still
    # adds up, only the entry no longer matches its order.
    async with shop.parts["Payment"].db.transaction() as conn:
        entry = (
            await conn.execute(
                select(ledger).where(
                    ledger.c.order_id == ids["completed"], ledger.c.kind == "charge"
                )
            )
        ).one()
        other = "c49" if entry.customer_id != "c49" else "c48"
        await conn.execute(update(ledger).where(ledger.c.id == entry.id).values(customer_id=other))
        for customer, delta in ((entry.customer_id, entry.amount), (other, -entry.amount)):
            await conn.execute(
                update(accounts)
                .where(accounts.c.customer_id == customer)
                .values(balance=accounts.c.balance + delta)
            )


async def _shift_stock(shop: Shop, ids: dict[str, str]) -> None:
    # Five apples turned into pears: the total is right, each sku is not.
    for sku, delta in (("apple", -5), ("pear", 5)):
        await _in(shop, "Inventory", update(stock).where(stock.c.sku == sku).values(
            on_hand=stock.c.on_hand + delta
        ))  # fmt: skip


async def _stranger(shop: Shop, ids: dict[str, str]) -> None:
    await _in(shop, "OMS", insert(orders).values(
        order_id="nobody-placed-me", customer_id="c1", total=0, currency="EUR",
        status="cancelled", placed_at=0.0,
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        (None, {}),
        (_double_charge, {"double_charges": 1, "money_conserved": False}),
        (_double_refund, {"double_refunds": 1, "money_conserved": False}),
        (_lose, {"lost": 1, "snapshots_ok": False}),
        (_unarchive, {"stuck": 1, "snapshots_ok": False}),
        (_reopen, {"stuck": 1, "snapshots_ok": False}),
        (_shrink_stock, {"stock_conserved": False}),
        (_misbook, {"money_conserved": False}),
        (_shift_stock, {"stock_conserved": False}),
        (_stranger, {"strangers": 1}),
    ],
)
async def test_the_checker_catches_each_broken_final_state(
    tmp_path: Path, tamper: Tamper | None, broken: dict[str, Any]
) -> None:
    settings = Settings(
        db=f"sqlite:///{tmp_path}/{{service}}.db",
        options=(("logistics.provider_failure", "0.3"),),
        runner=RunnerSettings(poll_timeout_s=0.05),
    )
    registry = fresh_registry()
    app = Application(settings, registry=registry, bus=EmbeddedBus(tmp_path / "bus.db"))
    await app.start()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        shop = Shop(app)
        await shop.seed(customers=50)
        placed = [e.saga_id for e in await shop.place(30, Mix(stock=0.2, payment=0.2))]
        assert await shop.wait(30, 60)
        stop.set()
        await task
        if tamper is not None:
            await tamper(shop, await _examples(shop))
        verdict = await check(app, registry, placed)
    finally:
        stop.set()
        await app.stop()
    healthy = Verdict(
        sagas=30, terminal=30, stock_conserved=True, money_conserved=True, snapshots_ok=True
    )
    expected = {**_figures(healthy), **broken}
    if "stuck" in broken or "lost" in broken:
        expected["terminal"] = 29
    assert _figures(verdict) == expected, verdict.problems
    assert verdict.ok == (not broken)
    assert bool(verdict.problems) == bool(broken)


async def _examples(shop: Shop) -> dict[str, str]:
    """An order of each kind the tampering needs: completed, refunded, refused by stock."""
    async with shop.parts["OMS"].db.transaction() as conn:
        rows = (
            await conn.execute(select(orders.c.order_id, orders.c.status, orders.c.cause))
        ).all()
    refused = sorted(r.order_id for r in rows if r.cause == "InventoryReservationFailed")
    async with shop.parts["Payment"].db.transaction() as conn:
        refunds = await conn.execute(select(ledger.c.order_id).where(ledger.c.kind == "refund"))
        refunded = sorted(r.order_id for r in refunds)
    completed = sorted(r.order_id for r in rows if r.status == "completed")
    assert refused and refunded and completed, rows
    return {"completed": completed[0], "refunded": refunded[0], "refused": refused[0]}


def _figures(v: Verdict) -> dict[str, Any]:
    names = (KEYS - {"kills", "broker_restarts", "dlq"}) | {"strangers"}
    return {k: getattr(v, k) for k in sorted(names)}
