"""The reactions of 'Payment': customer accounts and a ledger.

A reserved order is charged unless the bank fails (an injectable share of orders:
`--set payment.bank_failure=R`) or the account lacks the funds; a failed delivery is
refunded. The ledger has at most one charge and one refund per order.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.base.payment import PaymentBase
from handlers.events import (
    DeliveryFailed,
    InventoryReserved,
    PaymentFailed,
    PaymentSucceeded,
    RefundSucceeded,
)
from handlers.faults import hit, rate
from saga_registry.engine.reaction import ReactionContext

metadata = MetaData()
accounts = Table(
    "accounts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("balance", Integer, nullable=False),
)
ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # charge | refund
    Column("amount", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
    UniqueConstraint("order_id", "kind"),
)

# Statements built once: run for every order, they skip SQLAlchemy's per-call rebuild.
_BALANCE = select(accounts.c.balance).where(accounts.c.customer_id == bindparam("b_customer"))
_DEBIT = (
    update(accounts)
    .where(accounts.c.customer_id == bindparam("b_customer"))
    .values(balance=accounts.c.balance - bindparam("b_amount"))
)
_BOOK = insert(ledger)


async def open_account(conn: AsyncConnection, customer_id: str, balance: int) -> None:
    """Open `customer_id`'s account with `balance`, unless it exists."""
    found = await conn.scalar(
        select(accounts.c.customer_id).where(accounts.c.customer_id == customer_id)
    )
    if found is None:
        await conn.execute(insert(accounts).values(customer_id=customer_id, balance=balance))


class Payment(PaymentBase):
    """The 'Payment' service."""

    metadata = metadata
    bank_failure = 0.0
    options = MappingProxyType(
        {"payment.bank_failure": "the share of orders the bank refuses (0 to 1)"}
    )

    def configure(self, options: Mapping[str, str]) -> None:
        """`payment.bank_failure`: the share of orders the bank refuses."""
        self.bank_failure = rate(options, "payment.bank_failure")

    async def on_inventory_reserved(
        self, event: InventoryReserved, ctx: ReactionContext
    ) -> PaymentSucceeded | PaymentFailed:
        if hit(event.order_id, "bank", self.bank_failure):
            return PaymentFailed(
                order_id=event.order_id,
                reason="bank_error",
                detail="the bank refused the transaction",
            )
        balance = await ctx.db.scalar(_BALANCE, {"b_customer": event.customer_id})
        if balance is None or balance < event.total:
            return PaymentFailed(
                order_id=event.order_id,
                reason="insufficient_funds",
                detail=f"balance {balance or 0}, total {event.total}",
            )
        await ctx.db.execute(_DEBIT, {"b_customer": event.customer_id, "b_amount": event.total})
        await ctx.db.execute(
            _BOOK,
            {
                "order_id": event.order_id,
                "customer_id": event.customer_id,
                "kind": "charge",
                "amount": event.total,
                "currency": event.currency,
            },
        )
        return PaymentSucceeded(
            order_id=event.order_id,
            customer_id=event.customer_id,
            payment_id=f"pay-{event.order_id}",
            amount=event.total,
            currency=event.currency,
        )

    async def on_delivery_failed(
        self, event: DeliveryFailed, ctx: ReactionContext
    ) -> RefundSucceeded:
        charge = (
            await ctx.db.execute(
                select(ledger).where(ledger.c.order_id == event.order_id, ledger.c.kind == "charge")
            )
        ).first()
        if charge is None:
            raise LookupError(f"no charge to refund for order {event.order_id}")
        await ctx.db.execute(
            update(accounts)
            .where(accounts.c.customer_id == charge.customer_id)
            .values(balance=accounts.c.balance + charge.amount)
        )
        await ctx.db.execute(
            insert(ledger).values(
                order_id=event.order_id,
                customer_id=charge.customer_id,
                kind="refund",
                amount=charge.amount,
                currency=charge.currency,
            )
        )
        return RefundSucceeded(
            order_id=event.order_id,
            payment_id=f"pay-{event.order_id}",
            amount=charge.amount,
            currency=charge.currency,
            reason=event.reason,
        )
