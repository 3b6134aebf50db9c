"""The checkout saga end to end with the real services: each outcome, on both buses, with
the invariants of docs/checkout.md checked after each run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from handlers.order_history import archive
from handlers.shop import Mix, Shop
from saga_registry.engine.app import Application
from saga_registry.engine.buses import EmbeddedBus, KafkaBus
from saga_registry.engine.config import Settings
from saga_registry.engine.runner import RunnerSettings
from tests.helpers import ORDERS_PATHS
from tests.runtime_kit import fresh_registry

CHAINS = {
    "completed": ORDERS_PATHS["completed"],
    "stock": ORDERS_PATHS["cancelled_after_inventory_reservation_failed"],
    "payment": ORDERS_PATHS["cancelled_after_payment_failed"],
    "delivery": ORDERS_PATHS["cancelled_after_delivery_failed"],
}


@pytest.fixture(params=["embedded", "kafka"])
def make_shop(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None

    async def start(**options: str) -> AsyncIterator[Shop]:
        bus = KafkaBus(kafka) if kafka else EmbeddedBus(tmp_path / "bus.db")
        settings = Settings(
            db=f"sqlite:///{tmp_path}/{{service}}.db",
            options=tuple(options.items()),
            runner=RunnerSettings(poll_timeout_s=0.05),
        )
        app = Application(settings, registry=fresh_registry(), bus=bus)
        await app.start()
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        try:
            shop = Shop(app)
            await shop.seed(customers=50)
            yield shop
        finally:
            stop.set()
            await task
            await app.stop()

    return start


async def run_orders(
    make_shop: Callable[..., Any], count: int, mix: Mix, **options: str
) -> tuple[Any, dict[str, Any]]:
    gen = make_shop(**options)
    shop = await gen.__anext__()
    try:
        await shop.place(count, mix)
        assert await shop.wait(count, timeout_s=120), f"{await shop.archived()}/{count} done"
        report = await shop.report(count)
        async with shop.parts["OrderHistory"].db.transaction() as conn:
            snaps = {r.order_id: r.snapshot for r in (await conn.execute(select(archive))).all()}
        return report, snaps
    finally:
        await gen.aclose()


@pytest.mark.parametrize(
    ("outcome", "mix", "options"),
    [
        ("completed", Mix(), {}),
        ("stock", Mix(stock=1.0), {}),
        ("payment", Mix(payment=1.0), {}),
        ("delivery", Mix(), {"logistics.provider_failure": "1"}),
    ],
)
async def test_each_outcome_follows_its_chain_and_keeps_the_invariants(
    make_shop: Callable[..., Any], outcome: str, mix: Mix, options: dict[str, str]
) -> None:
    report, snaps = await run_orders(make_shop, 5, mix, **options)
    assert report.ok, report.invariants
    assert len(snaps) == 5
    for snap in snaps.values():
        assert snap["events"] == CHAINS[outcome], snap
        assert snap["status"] == ("completed" if outcome == "completed" else "cancelled")


async def test_bank_errors_and_price_mismatches_take_their_paths(
    make_shop: Callable[..., Any],
) -> None:
    report, _ = await run_orders(make_shop, 20, Mix(price=0.3), **{"payment.bank_failure": "0.3"})
    assert report.ok, report.invariants
    reasons = {k for k in report.outcomes}
    assert "cancelled: InventoryReservationFailed (price_mismatch)" in reasons, reasons
    assert "cancelled: PaymentFailed (bank_error)" in reasons, reasons
    assert "completed" in reasons, reasons
