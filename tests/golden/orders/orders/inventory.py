"""The reactions of 'Inventory'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`orders.base.inventory`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from orders.base.inventory import InventoryBase
from orders.events import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderCreated,
    PaymentFailed,
    RefundSucceeded,
)
from saga_registry.engine import ReactionContext


class Inventory(InventoryBase):
    """The 'Inventory' service."""

    async def on_order_created(
        self, event: OrderCreated, ctx: ReactionContext
    ) -> InventoryReserved | InventoryReservationFailed:
        raise NotImplementedError('Inventory.on_order_created is not written yet')

    async def on_payment_failed(
        self, event: PaymentFailed, ctx: ReactionContext
    ) -> InventoryReleased:
        raise NotImplementedError('Inventory.on_payment_failed is not written yet')

    async def on_refund_succeeded(
        self, event: RefundSucceeded, ctx: ReactionContext
    ) -> InventoryReleased:
        raise NotImplementedError('Inventory.on_refund_succeeded is not written yet')
