"""The reactions of 'Billing'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`trip_booking.base.billing`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from saga_registry.engine import ReactionContext
from trip_booking.base.billing import BillingBase
from trip_booking.events import (
    CarRented,
    PaymentCaptured,
    PaymentDeclined,
)


class Billing(BillingBase):
    """The 'Billing' service."""

    async def on_car_rented(
        self, event: CarRented, ctx: ReactionContext
    ) -> PaymentCaptured | PaymentDeclined:
        raise NotImplementedError('Billing.on_car_rented is not written yet')
