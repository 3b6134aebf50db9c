"""The reactions of 'Hotels'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`trip_booking.base.hotels`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from saga_registry.engine import ReactionContext
from trip_booking.base.hotels import HotelsBase
from trip_booking.events import (
    CarRentalFailed,
    CarReturned,
    FlightBooked,
    HotelBooked,
    HotelBookingFailed,
    HotelCancelled,
)


class Hotels(HotelsBase):
    """The 'Hotels' service."""

    async def on_flight_booked(
        self, event: FlightBooked, ctx: ReactionContext
    ) -> HotelBooked | HotelBookingFailed:
        raise NotImplementedError('Hotels.on_flight_booked is not written yet')

    async def on_car_rental_failed(
        self, event: CarRentalFailed, ctx: ReactionContext
    ) -> HotelCancelled:
        raise NotImplementedError('Hotels.on_car_rental_failed is not written yet')

    async def on_car_returned(
        self, event: CarReturned, ctx: ReactionContext
    ) -> HotelCancelled:
        raise NotImplementedError('Hotels.on_car_returned is not written yet')
