"""The reactions of 'OrderHistory': each order's timeline, and its final snapshot archived
for the customer once the saga ends (compensations included: `OrderCancelled` comes after
all of them)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.base.order_history import OrderHistoryBase
from handlers.events import (
    EVENT_TYPES,
    DeliveryFailed,
    DeliveryScheduled,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderCancelled,
    OrderCreated,
    PaymentFailed,
    PaymentSucceeded,
    RefundSucceeded,
)
from saga_registry.engine.reaction import ReactionContext

metadata = MetaData()
timeline = Table(
    "timeline",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("event_type", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("at", Float, nullable=False),
)
archive = Table(
    "archive",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # completed | cancelled
    Column("snapshot", JSON, nullable=False),
    Column("archived_at", Float, nullable=False),
)


class OrderHistory(OrderHistoryBase):
    """The 'OrderHistory' service."""

    metadata = metadata

    async def on_order_created(self, event: OrderCreated, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_inventory_reserved(self, event: InventoryReserved, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_payment_succeeded(self, event: PaymentSucceeded, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_inventory_reservation_failed(
        self, event: InventoryReservationFailed, ctx: ReactionContext
    ) -> None:
        await _note(ctx, event)

    async def on_payment_failed(self, event: PaymentFailed, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_delivery_failed(self, event: DeliveryFailed, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_refund_succeeded(self, event: RefundSucceeded, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_inventory_released(self, event: InventoryReleased, ctx: ReactionContext) -> None:
        await _note(ctx, event)

    async def on_delivery_scheduled(self, event: DeliveryScheduled, ctx: ReactionContext) -> None:
        await _note(ctx, event)
        await _archive(ctx.db, event.order_id, "completed")

    async def on_order_cancelled(self, event: OrderCancelled, ctx: ReactionContext) -> None:
        await _note(ctx, event)
        await _archive(ctx.db, event.order_id, "cancelled")


# Statements built once: run for every event, they skip SQLAlchemy's per-call rebuild.
_NOTE = insert(timeline)
_TIMELINE = (
    select(timeline.c.event_type, timeline.c.payload)
    .where(timeline.c.order_id == bindparam("order_id"))
    .order_by(timeline.c.id)
)
_ARCHIVE = insert(archive)


async def _note(ctx: ReactionContext, event: Any) -> None:
    await ctx.db.execute(
        _NOTE,
        {
            "order_id": ctx.saga_id,
            "event_type": event.event_type,
            "event_id": ctx.event_id,
            "payload": event.to_dict(),
            "at": time.time(),
        },
    )


async def _archive(conn: AsyncConnection, order_id: str, status: str) -> None:
    rows = (await conn.execute(_TIMELINE, {"order_id": order_id})).all()
    events = [r.event_type for r in rows]
    created: dict[str, Any] = next((r.payload for r in rows if r.event_type == "OrderCreated"), {})
    last: dict[str, Any] = rows[-1].payload if rows else {}
    snapshot = {
        "order_id": order_id,
        "status": status,
        "customer_id": created.get("customer_id"),
        "items": created.get("items", []),
        "total": created.get("total"),
        "currency": created.get("currency"),
        "events": events,
        "failure": next((e for e in events if EVENT_TYPES[e].kind == "failure"), None),
        "compensations": [e for e in events if EVENT_TYPES[e].kind == "compensation"],
        "reason": last.get("reason") if status == "cancelled" else None,
    }
    await conn.execute(
        _ARCHIVE,
        {"order_id": order_id, "status": status, "snapshot": snapshot, "archived_at": time.time()},
    )
