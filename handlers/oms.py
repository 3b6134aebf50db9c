"""The reactions of 'OMS': orders and their state.

OMS starts each saga (`place`, which initiates `OrderCreated` with the order row in one
transaction), turns any failure into `OrderCancelled` once its compensations are done, and
marks delivered orders completed.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.base.oms import OMSBase
from handlers.events import (
    DeliveryScheduled,
    InventoryReleased,
    InventoryReservationFailed,
    OrderCancelled,
    OrderCreated,
)
from saga_registry.engine.reaction import ReactionContext

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("total", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # placed | completed | cancelled
    Column("cause", String(64), nullable=True),
    Column("reason", String(64), nullable=True),
    Column("placed_at", Float, nullable=False),
)

# Statements built once: run for every order, they skip SQLAlchemy's per-call rebuild.
_PLACE = insert(orders)
_COMPLETE = (
    update(orders).where(orders.c.order_id == bindparam("b_order")).values(status="completed")
)


def new_order(
    order_id: str, customer_id: str, lines: list[tuple[str, int, int]], currency: str
) -> OrderCreated:
    """The `OrderCreated` of a checked-out cart: lines of (sku, quantity, unit price)."""
    return OrderCreated.from_dict(
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "currency": currency,
            "items": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in lines],
            "total": sum(q * p for _, q, p in lines),
        }
    )


async def record_order(conn: AsyncConnection, event: OrderCreated) -> None:
    """Write the order row; run it in the transaction that initiates `event`."""
    await conn.execute(
        _PLACE,
        {
            "order_id": event.order_id,
            "customer_id": event.customer_id,
            "total": event.total,
            "currency": event.currency,
            "status": "placed",
            "placed_at": time.time(),
        },
    )


class OMS(OMSBase):
    """The 'OMS' service."""

    metadata = metadata

    async def on_inventory_reservation_failed(
        self, event: InventoryReservationFailed, ctx: ReactionContext
    ) -> OrderCancelled:
        return await _cancel(ctx.db, event.order_id, "InventoryReservationFailed", event.reason)

    async def on_inventory_released(
        self, event: InventoryReleased, ctx: ReactionContext
    ) -> OrderCancelled:
        return await _cancel(ctx.db, event.order_id, event.cause, event.reason)

    async def on_delivery_scheduled(self, event: DeliveryScheduled, ctx: ReactionContext) -> None:
        await ctx.db.execute(_COMPLETE, {"b_order": event.order_id})


async def _cancel(conn: AsyncConnection, order_id: str, cause: str, reason: str) -> OrderCancelled:
    await conn.execute(
        update(orders)
        .where(orders.c.order_id == order_id)
        .values(status="cancelled", cause=cause, reason=reason)
    )
    # `cause` comes from an event whose schema already limits it to the failure events.
    return OrderCancelled.from_dict({"order_id": order_id, "cause": cause, "reason": reason})
