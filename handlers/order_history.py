"""The reactions of 'OrderHistory'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`handlers.base.order_history`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from engine.reaction import ReactionContext
from handlers.base.order_history import OrderHistoryBase
from handlers.events import (
    DeliveryFailed,
    DeliveryScheduled,
    InventoryReleased,
    InventoryReservationFailed,
    OrderCancelled,
    OrderCreated,
    PaymentFailed,
    RefundSucceeded,
)


class OrderHistory(OrderHistoryBase):
    """The 'OrderHistory' service."""

    async def on_order_created(
        self, event: OrderCreated, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OrderHistory.on_order_created is not written yet')

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
