"""The reactions of 'Accounts': open one account per e-mail address.

This module is yours: `saga codegen` wrote it once and never overwrites it.
"""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, insert, select

from handlers.base.accounts import AccountsBase
from handlers.events import AccountFailed, AccountOpened, CardCharged
from saga_registry.engine import ReactionContext

REVIEWED_DOMAIN = "@review.example"

metadata = MetaData()
accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
)


class Accounts(AccountsBase):
    """An e-mail address already taken fails the signup (and its charge is refunded). An
    address at a domain under review waits for a person: the reaction answers nothing now,
    and if nobody answers within the registry's deadline the engine emits AccountFailed
    (reason `timeout`) for it."""

    metadata = metadata

    async def on_card_charged(
        self, event: CardCharged, ctx: ReactionContext
    ) -> AccountOpened | AccountFailed | None:
        if event.email.lower().endswith(REVIEWED_DOMAIN):
            return None  # a person decides; see the class docstring
        taken = await ctx.db.scalar(
            select(accounts.c.account_id).where(accounts.c.email == event.email.lower())
        )
        if taken is not None:
            return AccountFailed(signup_id=event.signup_id, reason="email_taken")
        account_id = f"acc-{event.signup_id}"
        await ctx.db.execute(
            insert(accounts).values(account_id=account_id, email=event.email.lower())
        )
        return AccountOpened(signup_id=event.signup_id, account_id=account_id)
