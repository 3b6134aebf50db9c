"""The 'Cart' service: customers' carts, checked against the warehouse's stock before
checkout. Cart reacts to no event; OMS places the order of a checked-out cart."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Column, Integer, MetaData, String, Table

from handlers.base.cart import CartBase

metadata = MetaData()
carts = Table(
    "carts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
)


class Unavailable(ValueError):
    """A cart line the warehouse cannot supply."""


class Cart(CartBase):
    """The 'Cart' service."""

    metadata = metadata

    @staticmethod
    def check_availability(lines: Mapping[str, int], on_hand: Mapping[str, int]) -> None:
        """Refuse a checkout whose lines exceed the stock on hand (raises Unavailable)."""
        short = [
            f"{sku}: {on_hand.get(sku, 0)} left, {qty} wanted"
            for sku, qty in lines.items()
            if on_hand.get(sku, 0) < qty
        ]
        if short:
            raise Unavailable("; ".join(short))
