"""The reactions of 'Logistics'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`handlers.base.logistics`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from engine.reaction import ReactionContext
from handlers.base.logistics import LogisticsBase
from handlers.events import (
    DeliveryFailed,
    DeliveryScheduled,
    PaymentSucceeded,
)


class Logistics(LogisticsBase):
    """The 'Logistics' service."""

    async def on_payment_succeeded(
        self, event: PaymentSucceeded, ctx: ReactionContext
    ) -> DeliveryScheduled | DeliveryFailed:
        raise NotImplementedError('Logistics.on_payment_succeeded is not written yet')
