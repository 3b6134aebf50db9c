"""The reactions of 'Logistics': delivery requests to a logistics provider.

The provider fails for an injectable share of orders (`--set logistics.provider_failure=R`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy import Column, MetaData, String, Table, insert

from handlers.base.logistics import LogisticsBase
from handlers.events import DeliveryFailed, DeliveryScheduled, PaymentSucceeded
from handlers.faults import hit, rate
from saga_registry.engine.reaction import ReactionContext

metadata = MetaData()
deliveries = Table(
    "deliveries",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("delivery_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),  # scheduled | failed
)
# Built once: run for every order, it skips SQLAlchemy's per-call rebuild.
_BOOK = insert(deliveries)


class Logistics(LogisticsBase):
    """The 'Logistics' service."""

    metadata = metadata
    provider_failure = 0.0
    options = MappingProxyType(
        {"logistics.provider_failure": "the share of orders the provider refuses (0 to 1)"}
    )

    def configure(self, options: Mapping[str, str]) -> None:
        """`logistics.provider_failure`: the share of orders the provider cannot take."""
        self.provider_failure = rate(options, "logistics.provider_failure")

    async def on_payment_succeeded(
        self, event: PaymentSucceeded, ctx: ReactionContext
    ) -> DeliveryScheduled | DeliveryFailed | None:
        if hit(event.order_id, "provider", self.provider_failure):
            await ctx.db.execute(
                insert(deliveries).values(order_id=event.order_id, status="failed")
            )
            return DeliveryFailed(
                order_id=event.order_id,
                reason="provider_error",
                detail="the logistics provider refused the request",
            )
        delivery_id = f"dlv-{event.order_id}"
        await ctx.db.execute(
            _BOOK, {"order_id": event.order_id, "delivery_id": delivery_id, "status": "scheduled"}
        )
        return DeliveryScheduled(
            order_id=event.order_id, delivery_id=delivery_id, carrier="ACME Parcel", eta_days=2
        )
