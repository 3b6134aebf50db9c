"""The reactions of 'Booking'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`trip_booking.base.booking`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from saga_registry.engine import ReactionContext
from trip_booking.base.booking import BookingBase
from trip_booking.events import (
    FlightBookingFailed,
    FlightCancelled,
    PaymentCaptured,
    TripCancelled,
    TripConfirmed,
)


class Booking(BookingBase):
    """The 'Booking' service."""

    async def on_flight_booking_failed(
        self, event: FlightBookingFailed, ctx: ReactionContext
    ) -> TripCancelled:
        raise NotImplementedError('Booking.on_flight_booking_failed is not written yet')

    async def on_flight_cancelled(
        self, event: FlightCancelled, ctx: ReactionContext
    ) -> TripCancelled:
        raise NotImplementedError('Booking.on_flight_cancelled is not written yet')

    async def on_payment_captured(
        self, event: PaymentCaptured, ctx: ReactionContext
    ) -> TripConfirmed:
        raise NotImplementedError('Booking.on_payment_captured is not written yet')
