"""The reactions of 'OMS'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`orders.base.oms`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from orders.base.oms import OMSBase
from orders.events import (
    DeliveryScheduled,
    InventoryReleased,
    InventoryReservationFailed,
    OrderCancelled,
)
from saga_registry.engine import ReactionContext


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
