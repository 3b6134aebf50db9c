"""The reactions of 'Notifications'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`trip_booking.base.notifications`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from saga_registry.engine import ReactionContext
from trip_booking.base.notifications import NotificationsBase
from trip_booking.events import (
    TripCancelled,
    TripConfirmed,
)


class Notifications(NotificationsBase):
    """The 'Notifications' service."""

    async def on_trip_confirmed(
        self, event: TripConfirmed, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('Notifications.on_trip_confirmed is not written yet')

    async def on_trip_cancelled(
        self, event: TripCancelled, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('Notifications.on_trip_cancelled is not written yet')
