"""Outcome tests of the checkout saga: one per way an order can end, run through the
engine's test harness (the `saga` fixture: every service of registry/saga.yaml in this
process, on a throwaway bus and databases).

These are the checkout project's own tests (`saga codegen` wrote the first version once;
this one is filled in). `saga init DIR --example checkout` copies this file with the
project.
"""

from __future__ import annotations

from typing import Any

from handlers.catalog import CURRENCY, PRICES, SOLD_OUT
from handlers.events import OrderCreated
from handlers.oms import new_order
from handlers.shop import Shop
from saga_registry.testing import SagaHarness

RICH, POOR = "c0", "p0"  # accounts Shop.seed opens: plenty of money, almost none


async def opened(saga: SagaHarness) -> SagaHarness:
    """The shop stocked and its accounts open."""
    await Shop(saga.app).seed(customers=1)
    return saga


def order(order_id: str, customer: str = RICH, sku: str = "apple", price: int = 0) -> OrderCreated:
    return new_order(order_id, customer, [(sku, 2, price or PRICES.get(sku, 990))], CURRENCY)


def service(saga: SagaHarness, name: str) -> Any:
    """The running instance of service `name` (to change its settings in a test)."""
    return next(s.runner.service for s in saga.app.services if s.runner.name == name)


async def test_completed(saga: SagaHarness) -> None:
    """Outcome `completed`: OrderCreated -> InventoryReserved -> PaymentSucceeded ->
    DeliveryScheduled."""
    await opened(saga)
    result = await saga.run_outcome("completed", order("o-1"))
    assert result.event("PaymentSucceeded").amount == result.event("OrderCreated").total


async def test_cancelled_after_delivery_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_delivery_failed`: the provider refuses, so the payment is
    refunded and the goods released before the order is cancelled."""
    await opened(saga)
    service(saga, "Logistics").provider_failure = 1.0
    result = await saga.run_outcome("cancelled_after_delivery_failed", order("o-2"))
    assert result.event("RefundSucceeded").amount == result.event("PaymentSucceeded").amount


async def test_cancelled_after_payment_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_payment_failed`: a customer without the money."""
    await opened(saga)
    result = await saga.run_outcome("cancelled_after_payment_failed", order("o-3", POOR))
    assert result.event("PaymentFailed").reason == "insufficient_funds"


async def test_cancelled_after_inventory_reservation_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_inventory_reservation_failed`: the item is sold out."""
    await opened(saga)
    result = await saga.run_outcome(
        "cancelled_after_inventory_reservation_failed", order("o-4", sku=SOLD_OUT)
    )
    assert result.event("InventoryReservationFailed").reason == "out_of_stock"
    assert result.event("OrderCancelled").cause == "InventoryReservationFailed"
