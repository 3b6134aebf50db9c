"""Checkout as a shop runs it: seed the warehouse and accounts, place orders (through the
cart's availability check and OMS), wait until every saga has ended, and check the
invariants of docs/checkout.md over the services' own databases."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from handlers.cart import Cart
from handlers.catalog import CURRENCY, INITIAL_STOCK, PRICES, PRICES_WITH_SOLD_OUT, SOLD_OUT
from handlers.inventory import seed_stock, stock
from handlers.oms import new_order, orders, record_order
from handlers.order_history import archive
from handlers.payment import ledger, open_account
from saga_registry.engine.app import Application
from saga_registry.engine.envelope import Envelope

RICH = 10_000_000
POOR = 50


@dataclass(frozen=True)
class Mix:
    """Shares of orders placed to fail on purpose, by cause."""

    stock: float = 0.0
    payment: float = 0.0
    delivery: float = 0.0
    price: float = 0.0


@dataclass
class Report:
    """What happened to the orders, and whether every invariant holds."""

    outcomes: Counter[str] = field(default_factory=Counter)
    invariants: dict[str, tuple[bool, str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return all(ok for ok, _ in self.invariants.values())


class Shop:
    """The checkout saga's services in `app`, driven as a shop."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.parts = {s.runner.name: s for s in app.services}

    async def seed(self, customers: int) -> None:
        """Stock the warehouse; open accounts: rich customers c0.. and poor ones p0.."""
        async with self.parts["Inventory"].db.transaction() as conn:
            await seed_stock(conn)
        async with self.parts["Payment"].db.transaction() as conn:
            for i in range(customers):
                await open_account(conn, f"c{i}", RICH)
                await open_account(conn, f"p{i}", POOR)

    async def place(
        self, count: int, mix: Mix, seed: int = 7, prefix: str = "order"
    ) -> list[Envelope]:
        """Place `count` orders; shares of them are built to fail as `mix` says."""
        rng = random.Random(seed)
        on_hand = await self.on_hand()
        envs = []
        oms = self.parts["OMS"].runner
        for i in range(count):
            order_id = f"{prefix}-{i:06d}"
            customer = f"c{rng.randrange(50)}"
            lines = {sku: rng.randint(1, 3) for sku in rng.sample(sorted(PRICES), 2)}
            prices = dict(PRICES_WITH_SOLD_OUT)
            draw = rng.random()
            if draw < mix.stock:
                lines[SOLD_OUT] = 1  # listed, never in stock: the warehouse refuses
            elif draw < mix.stock + mix.price:
                sku = next(iter(lines))
                prices[sku] += 1  # a stale price in the cart
            elif draw < mix.stock + mix.price + mix.payment:
                customer = f"p{rng.randrange(50)}"  # cannot pay
            checked = {k: v for k, v in lines.items() if k != SOLD_OUT}
            Cart.check_availability(checked, on_hand)
            event = new_order(
                order_id, customer, [(s, q, prices[s]) for s, q in sorted(lines.items())], CURRENCY
            )

            async def effects(conn: Any, event: Any = event) -> None:
                await record_order(conn, event)

            envs.append(await oms.initiate(event, effects))
        return envs

    async def on_hand(self) -> dict[str, int]:
        """Stock on hand by sku (Cart's availability check reads it)."""
        async with self.parts["Inventory"].db.transaction() as conn:
            rows = (await conn.execute(select(stock.c.sku, stock.c.on_hand))).all()
        return {r.sku: r.on_hand for r in rows}

    async def archived(self) -> int:
        """How many orders have their final snapshot archived."""
        async with self.parts["OrderHistory"].db.transaction() as conn:
            return int(await conn.scalar(select(func.count()).select_from(archive)) or 0)

    async def wait(self, count: int, timeout_s: float, tick: Any = None) -> bool:
        """Wait until `count` snapshots are archived; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = await self.archived()
            if tick is not None:
                tick(done)
            if done >= count:
                return True
            await asyncio.sleep(0.1)
        return False

    async def report(
        self, expected: int, initial_stock: int = INITIAL_STOCK * len(PRICES)
    ) -> Report:
        """Outcomes by reason, and the invariants over every service's database."""
        rep = Report()
        async with self.parts["OrderHistory"].db.transaction() as conn:
            snaps = {r.order_id: r.snapshot for r in (await conn.execute(select(archive))).all()}
        async with self.parts["OMS"].db.transaction() as conn:
            oms = {r.order_id: r for r in (await conn.execute(select(orders))).all()}
        async with self.parts["Inventory"].db.transaction() as conn:
            held = await conn.scalar(select(func.sum(stock.c.on_hand + stock.c.reserved)))
        async with self.parts["Payment"].db.transaction() as conn:
            money = {
                r.kind: r.total
                for r in (
                    await conn.execute(
                        select(ledger.c.kind, func.sum(ledger.c.amount).label("total")).group_by(
                            ledger.c.kind
                        )
                    )
                ).all()
            }
            charges = Counter(
                r.order_id
                for r in (
                    await conn.execute(select(ledger.c.order_id).where(ledger.c.kind == "charge"))
                ).all()
            )
        for s in snaps.values():
            key = (
                "completed"
                if s["status"] == "completed"
                else f"cancelled: {s['failure']} ({s['reason']})"
            )
            rep.outcomes[key] += 1
        completed = [o for o in oms.values() if o.status == "completed"]
        not_terminal = [o.order_id for o in oms.values() if o.status == "placed"]
        rep.invariants["every saga ended"] = (
            len(oms) == expected and not not_terminal,
            f"{len(oms) - len(not_terminal)}/{expected} terminal",
        )
        rep.invariants["stock conserved"] = (
            held == initial_stock,
            f"on hand + reserved = {held}, at start {initial_stock}",
        )
        net = money.get("charge", 0) - money.get("refund", 0)
        paid = sum(o.total for o in completed)
        rep.invariants["money conserved"] = (
            net == paid and max(charges.values(), default=0) <= 1,
            f"charged - refunded = {net}, completed orders total {paid}",
        )
        both = [
            k
            for k, s in snaps.items()
            if s["status"] == "cancelled" and "DeliveryScheduled" in s["events"]
        ]
        rep.invariants["none both delivered and cancelled"] = (not both, f"{len(both)} found")
        mismatched = [k for k, o in oms.items() if snaps.get(k, {}).get("status") != o.status]
        rep.invariants["one snapshot per order, matching"] = (
            len(snaps) == len(oms) and not mismatched,
            f"{len(snaps)} snapshots for {len(oms)} orders, {len(mismatched)} mismatched",
        )
        return rep
