"""The reactions of 'Payment'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`orders.base.payment`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from orders.base.payment import PaymentBase
from orders.events import (
    DeliveryFailed,
    InventoryReserved,
    PaymentFailed,
    PaymentSucceeded,
    RefundSucceeded,
)
from saga_registry.engine import ReactionContext


class Payment(PaymentBase):
    """The 'Payment' service."""

    async def on_inventory_reserved(
        self, event: InventoryReserved, ctx: ReactionContext
    ) -> PaymentSucceeded | PaymentFailed:
        raise NotImplementedError('Payment.on_inventory_reserved is not written yet')

    async def on_delivery_failed(
        self, event: DeliveryFailed, ctx: ReactionContext
    ) -> RefundSucceeded:
        raise NotImplementedError('Payment.on_delivery_failed is not written yet')
