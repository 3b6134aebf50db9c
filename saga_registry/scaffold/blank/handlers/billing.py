"""The reactions of 'Billing': charge the card, refund it when the signup fails later.

This module is yours: `saga codegen` wrote it once and never overwrites it. Each reaction
runs inside one database transaction with the engine's own rows: what it writes through
`ctx.db` commits together with the event it returns, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from handlers.base.billing import BillingBase
from handlers.events import (
    AccountFailed,
    CardCharged,
    ChargeFailed,
    ChargeRefunded,
    SignupRequested,
)
from saga_registry.engine import ReactionContext

metadata = MetaData()
charges = Table(
    "charges",
    metadata,
    Column("signup_id", String(64), primary_key=True),
    Column("charge_id", String(64), nullable=False),
    Column("amount", Integer, nullable=False),
    Column("refunded", Integer, nullable=False, default=0),
)


class Billing(BillingBase):
    """Charges up to `card_limit` cents; a larger amount is declined."""

    metadata = metadata
    options = MappingProxyType({"billing.card_limit": "the largest charge a card takes, in cents"})
    card_limit = 10_000

    def configure(self, options: Mapping[str, str]) -> None:
        if "billing.card_limit" in options:
            self.card_limit = int(options["billing.card_limit"])

    async def on_signup_requested(
        self, event: SignupRequested, ctx: ReactionContext
    ) -> CardCharged | ChargeFailed:
        if event.amount > self.card_limit:
            return ChargeFailed(signup_id=event.signup_id, reason="card_declined")
        charge_id = f"ch-{event.signup_id}"
        await ctx.db.execute(
            insert(charges).values(
                signup_id=event.signup_id, charge_id=charge_id, amount=event.amount
            )
        )
        return CardCharged(
            signup_id=event.signup_id, charge_id=charge_id, email=event.email, amount=event.amount
        )

    async def on_account_failed(self, event: AccountFailed, ctx: ReactionContext) -> ChargeRefunded:
        row = (
            await ctx.db.execute(select(charges).where(charges.c.signup_id == event.signup_id))
        ).one()
        await ctx.db.execute(
            charges.update().where(charges.c.signup_id == event.signup_id).values(refunded=1)
        )
        return ChargeRefunded(signup_id=event.signup_id, charge_id=row.charge_id, amount=row.amount)
