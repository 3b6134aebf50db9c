"""The reactions of 'Logistics'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`orders.base.logistics`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from orders.base.logistics import LogisticsBase
from orders.events import (
    DeliveryFailed,
    DeliveryScheduled,
    PaymentSucceeded,
)
from saga_registry.engine import ReactionContext


class Logistics(LogisticsBase):
    """The 'Logistics' service."""

    async def on_payment_succeeded(
        self, event: PaymentSucceeded, ctx: ReactionContext
    ) -> DeliveryScheduled | DeliveryFailed | None:
        raise NotImplementedError('Logistics.on_payment_succeeded is not written yet')
