"""The reactions of 'OMS'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`handlers.base.oms`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from engine.reaction import ReactionContext
from handlers.base.oms import OMSBase
from handlers.events import (
    DeliveryScheduled,
    InventoryReleased,
    InventoryReservationFailed,
    OrderCancelled,
)


class OMS(OMSBase):
    """The 'OMS' service."""

    async def on_inventory_reservation_failed(
        self, event: InventoryReservationFailed, ctx: ReactionContext
    ) -> OrderCancelled:
        raise NotImplementedError('OMS.on_inventory_reservation_failed is not written yet')

    async def on_inventory_released(
        self, event: InventoryReleased, ctx: ReactionContext
    ) -> OrderCancelled:
        raise NotImplementedError('OMS.on_inventory_released is not written yet')

    async def on_delivery_scheduled(
        self, event: DeliveryScheduled, ctx: ReactionContext
    ) -> None:
        raise NotImplementedError('OMS.on_delivery_scheduled is not written yet')
