"""The reactions of 'Inventory': stock and reservations.

An order is reserved whole or not at all: an unknown sku, a price or total that does not
match the catalogue, or stock short for any line refuses it. A reservation is released
(goods back on the shelf) when the order fails after it was made.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.base.inventory import InventoryBase
from handlers.catalog import INITIAL_STOCK, PRICES_WITH_SOLD_OUT, SOLD_OUT
from handlers.events import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderCreated,
    PaymentFailed,
    RefundSucceeded,
)
from saga_registry.engine.reaction import ReactionContext

Refusal = Literal["out_of_stock", "price_mismatch", "unknown_sku"]

metadata = MetaData()
stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("price", Integer, nullable=False),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
)
reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("reservation_id", String(64), nullable=False),
    Column("lines", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # held | released
)

# Statements built once: run for every order, they skip SQLAlchemy's per-call rebuild.
_STOCK_OF = select(stock).where(stock.c.sku.in_(bindparam("skus", expanding=True)))
_MOVE = (  # reserve: from the shelf to the reserved pile
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .values(
        on_hand=stock.c.on_hand - bindparam("b_quantity"),
        reserved=stock.c.reserved + bindparam("b_quantity"),
    )
)
_RESERVE = insert(reservations)


async def seed_stock(conn: AsyncConnection, on_hand: int = INITIAL_STOCK) -> None:
    """Fill an empty warehouse with the catalogue (the sold-out item at zero)."""
    if await conn.scalar(select(stock.c.sku).limit(1)) is not None:
        return
    await conn.execute(
        insert(stock),
        [
            {
                "sku": sku,
                "price": price,
                "on_hand": 0 if sku == SOLD_OUT else on_hand,
                "reserved": 0,
            }
            for sku, price in PRICES_WITH_SOLD_OUT.items()
        ],
    )


class Inventory(InventoryBase):
    """The 'Inventory' service."""

    metadata = metadata

    async def on_order_created(
        self, event: OrderCreated, ctx: ReactionContext
    ) -> InventoryReserved | InventoryReservationFailed:
        rows = {
            r.sku: r
            for r in (await ctx.db.execute(_STOCK_OF, {"skus": [i.sku for i in event.items]}))
        }

        def refuse(reason: Refusal, detail: str) -> InventoryReservationFailed:
            return InventoryReservationFailed(order_id=event.order_id, reason=reason, detail=detail)

        for item in event.items:
            if item.sku not in rows:
                return refuse("unknown_sku", f"no such sku {item.sku!r}")
            if item.unit_price != rows[item.sku].price:
                return refuse(
                    "price_mismatch",
                    f"{item.sku} costs {rows[item.sku].price}, not {item.unit_price}",
                )
        if sum(i.quantity * i.unit_price for i in event.items) != event.total:
            return refuse("price_mismatch", "the items do not add up to the cart total")
        wanted: dict[str, int] = {}
        for item in event.items:
            wanted[item.sku] = wanted.get(item.sku, 0) + item.quantity
        for sku, quantity in wanted.items():
            if rows[sku].on_hand < quantity:
                return refuse("out_of_stock", f"{sku}: {rows[sku].on_hand} left, {quantity} wanted")
        await ctx.db.execute(
            _MOVE, [{"b_sku": sku, "b_quantity": q} for sku, q in sorted(wanted.items())]
        )
        reservation_id = f"res-{event.order_id}"
        await ctx.db.execute(
            _RESERVE,
            {
                "order_id": event.order_id,
                "reservation_id": reservation_id,
                "lines": sorted(wanted.items()),
                "status": "held",
            },
        )
        return InventoryReserved(
            order_id=event.order_id,
            customer_id=event.customer_id,
            reservation_id=reservation_id,
            total=event.total,
            currency=event.currency,
        )

    async def on_payment_failed(
        self, event: PaymentFailed, ctx: ReactionContext
    ) -> InventoryReleased:
        reservation_id = await _release(ctx.db, event.order_id)
        return InventoryReleased(
            order_id=event.order_id,
            reservation_id=reservation_id,
            cause="PaymentFailed",
            reason=event.reason,
        )

    async def on_refund_succeeded(
        self, event: RefundSucceeded, ctx: ReactionContext
    ) -> InventoryReleased:
        reservation_id = await _release(ctx.db, event.order_id)
        return InventoryReleased(
            order_id=event.order_id,
            reservation_id=reservation_id,
            cause="DeliveryFailed",
            reason=event.reason,
        )


async def _release(conn: AsyncConnection, order_id: str) -> str:
    row = (
        await conn.execute(select(reservations).where(reservations.c.order_id == order_id))
    ).first()
    if row is None:
        # The state machine lets a release happen only after a reservation; not finding
        # one means this database lost data. Retry, then dead-letter: never guess.
        raise LookupError(f"no reservation for order {order_id}")
    if row.status == "held":
        for sku, quantity in row.lines:
            await conn.execute(
                update(stock)
                .where(stock.c.sku == sku)
                .values(on_hand=stock.c.on_hand + quantity, reserved=stock.c.reserved - quantity)
            )
        await conn.execute(
            update(reservations)
            .where(reservations.c.order_id == order_id)
            .values(status="released")
        )
    return str(row.reservation_id)
