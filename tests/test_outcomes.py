"""Outcome tests of the 'checkout' saga: one per way a saga of the registry can end.

This file is yours: `saga codegen` wrote it once and never overwrites it (`--no-tests`
skips it). Each test fails, saying so, until you give it the event that starts a saga
taking its path.
"""

from __future__ import annotations

from handlers.events import (
    OrderCreated,  # noqa: F401
)
from saga_registry.testing import SagaHarness


async def test_completed(saga: SagaHarness) -> None:
    """Outcome `completed`: OrderCreated -> InventoryReserved -> PaymentSucceeded -> DeliveryScheduled."""
    # Fill in the event that starts a saga taking this path; before starting, make a
    # reaction fail with saga.fail(SERVICE, EVENT) or plan a deadline with saga.advance(S)
    # where the path needs it. Until then this test fails and says so.
    stimulus = None  # e.g. OrderCreated(order_id="o1", ...)
    await saga.run_outcome("completed", stimulus)


async def test_cancelled_after_delivery_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_delivery_failed`: OrderCreated -> InventoryReserved -> PaymentSucceeded -> DeliveryFailed -> RefundSucceeded -> InventoryReleased -> OrderCancelled."""
    # Fill in the event that starts a saga taking this path; before starting, make a
    # reaction fail with saga.fail(SERVICE, EVENT) or plan a deadline with saga.advance(S)
    # where the path needs it. Until then this test fails and says so.
    stimulus = None  # e.g. OrderCreated(order_id="o1", ...)
    await saga.run_outcome("cancelled_after_delivery_failed", stimulus)


async def test_cancelled_after_payment_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_payment_failed`: OrderCreated -> InventoryReserved -> PaymentFailed -> InventoryReleased -> OrderCancelled."""
    # Fill in the event that starts a saga taking this path; before starting, make a
    # reaction fail with saga.fail(SERVICE, EVENT) or plan a deadline with saga.advance(S)
    # where the path needs it. Until then this test fails and says so.
    stimulus = None  # e.g. OrderCreated(order_id="o1", ...)
    await saga.run_outcome("cancelled_after_payment_failed", stimulus)


async def test_cancelled_after_inventory_reservation_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_inventory_reservation_failed`: OrderCreated -> InventoryReservationFailed -> OrderCancelled."""
    # Fill in the event that starts a saga taking this path; before starting, make a
    # reaction fail with saga.fail(SERVICE, EVENT) or plan a deadline with saga.advance(S)
    # where the path needs it. Until then this test fails and says so.
    stimulus = None  # e.g. OrderCreated(order_id="o1", ...)
    await saga.run_outcome("cancelled_after_inventory_reservation_failed", stimulus)
