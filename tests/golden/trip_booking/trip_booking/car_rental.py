"""The reactions of 'CarRental'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`trip_booking.base.car_rental`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from saga_registry.engine import ReactionContext
from trip_booking.base.car_rental import CarRentalBase
from trip_booking.events import (
    CarRentalFailed,
    CarRented,
    CarReturned,
    HotelBooked,
    PaymentDeclined,
)


class CarRental(CarRentalBase):
    """The 'CarRental' service."""

    async def on_hotel_booked(
        self, event: HotelBooked, ctx: ReactionContext
    ) -> CarRented | CarRentalFailed:
        raise NotImplementedError('CarRental.on_hotel_booked is not written yet')

    async def on_payment_declined(
        self, event: PaymentDeclined, ctx: ReactionContext
    ) -> CarReturned:
        raise NotImplementedError('CarRental.on_payment_declined is not written yet')
