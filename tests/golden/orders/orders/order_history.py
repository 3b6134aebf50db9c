"""The reactions of 'OrderHistory'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`orders.base.order_history`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from orders.base.order_history import OrderHistoryBase
from orders.events import (
    DeliveryFailed,
    DeliveryScheduled,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderCancelled,
    OrderCreated,
    PaymentFailed,
    PaymentSucceeded,
    RefundSucceeded,
)
from saga_registry.engine import ReactionContext


class OrderHistory(OrderHistoryBase):
    """The 'OrderHistory' service."""

    async def on_order_created(
        self, event: OrderCreated, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_order_created is not written yet')

    async def on_inventory_reserved(
        self, event: InventoryReserved, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_inventory_reserved is not written yet')

    async def on_payment_succeeded(
        self, event: PaymentSucceeded, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_payment_succeeded is not written yet')

    async def on_inventory_reservation_failed(
        self, event: InventoryReservationFailed, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_inventory_reservation_failed is not written yet')

    async def on_payment_failed(
        self, event: PaymentFailed, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_payment_failed is not written yet')

    async def on_delivery_failed(
        self, event: DeliveryFailed, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_delivery_failed is not written yet')

    async def on_refund_succeeded(
        self, event: RefundSucceeded, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_refund_succeeded is not written yet')

    async def on_inventory_released(
        self, event: InventoryReleased, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_inventory_released is not written yet')

    async def on_delivery_scheduled(
        self, event: DeliveryScheduled, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_delivery_scheduled is not written yet')

    async def on_order_cancelled(
        self, event: OrderCancelled, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_order_cancelled is not written yet')
