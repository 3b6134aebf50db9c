"""The reactions of 'Flights'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`trip_booking.base.flights`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from saga_registry.engine import ReactionContext
from trip_booking.base.flights import FlightsBase
from trip_booking.events import (
    FlightBooked,
    FlightBookingFailed,
    FlightCancelled,
    HotelBookingFailed,
    HotelCancelled,
    TripRequested,
)


class Flights(FlightsBase):
    """The 'Flights' service."""

    async def on_trip_requested(
        self, event: TripRequested, ctx: ReactionContext
    ) -> FlightBooked | FlightBookingFailed:
        raise NotImplementedError('Flights.on_trip_requested is not written yet')

    async def on_hotel_booking_failed(
        self, event: HotelBookingFailed, ctx: ReactionContext
    ) -> FlightCancelled:
        raise NotImplementedError('Flights.on_hotel_booking_failed is not written yet')

    async def on_hotel_cancelled(
        self, event: HotelCancelled, ctx: ReactionContext
    ) -> FlightCancelled:
        raise NotImplementedError('Flights.on_hotel_cancelled is not written yet')
