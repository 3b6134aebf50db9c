"""The checker: once the run is quiet, read every service's database and the dead-letter
topic and judge the final state against the invariants of docs/checkout.md, order by order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from handlers.catalog import INITIAL_STOCK, PRICES
from handlers.inventory import reservations, stock
from handlers.oms import orders
from handlers.order_history import archive, timeline
from handlers.payment import accounts, ledger
from handlers.shop import POOR, RICH
from saga_registry.engine import tables
from saga_registry.engine.app import Application
from saga_registry.engine.deadletter import letters
from saga_registry.engine.errors import EngineError
from saga_registry.registry.model import Registry
from saga_registry.registry.outcomes import outcome_paths


@dataclass
class Verdict:
    """The figures of the final state; `problems` says, for people, what is wrong."""

    sagas: int = 0
    terminal: int = 0
    stuck: int = 0
    lost: int = 0
    double_charges: int = 0
    double_refunds: int = 0
    stock_conserved: bool = False
    money_conserved: bool = False
    snapshots_ok: bool = False
    dlq: int = 0
    strangers: int = 0
    poison_dead_lettered: bool = True
    dlq_read: bool = True
    """False if the dead-letter topic could not be read: `dlq` and the poison are unjudged."""
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, stuck or doubled; stock and money conserved; snapshots right."""
        return (
            self.terminal == self.sagas
            and not (self.stuck or self.lost or self.double_charges or self.double_refunds)
            and not self.strangers
            and self.stock_conserved
            and self.money_conserved
            and self.snapshots_ok
            and self.poison_dead_lettered
            and self.dlq_read
        )


async def _rows(app: Application, service: str, stmt: Any) -> list[Any]:
    part = next(s for s in app.services if s.runner.name == service)
    async with part.db.transaction() as conn:
        return list((await conn.execute(stmt)).all())


async def check(
    app: Application,
    registry: Registry,
    placed: Iterable[str],
    dead_keys: Mapping[str, str | None] | None = None,
    ghost_sagas: Iterable[str] = (),
) -> Verdict:
    """Judge the final state. `placed`: the orders the load placed; `dead_keys`: keys of
    poison records (with their type) every service taking that type in must have
    dead-lettered; `ghost_sagas`: sagas of valid
    events nobody placed, which must have changed nothing."""
    placed = set(placed)
    v = Verdict(sagas=len(placed))
    oms = {r.order_id: r for r in await _rows(app, "OMS", select(orders))}
    snaps = {r.order_id: r.snapshot for r in await _rows(app, "OrderHistory", select(archive))}
    entries = await _rows(app, "Payment", select(ledger))
    balances = {r.customer_id: r.balance for r in await _rows(app, "Payment", select(accounts))}
    shelves = await _rows(app, "Inventory", select(stock))
    held = [r for r in await _rows(app, "Inventory", select(reservations)) if r.status == "held"]

    v.lost = len(placed - oms.keys())
    if v.lost:
        v.problems.append(
            f"{v.lost} placed order(s) unknown to OMS: {sorted(placed - oms.keys())[:5]}"
        )
    strangers = oms.keys() - placed
    v.strangers = len(strangers)
    if strangers:
        v.problems.append(
            f"{len(strangers)} order(s) in OMS nobody placed: {sorted(strangers)[:5]}"
        )
    ended = {k for k, o in oms.items() if o.status in ("completed", "cancelled")}
    v.terminal = len(
        {k for k in placed & ended if k in snaps and snaps[k]["status"] == oms[k].status}
    )
    stuck = sorted((placed & oms.keys()) - ended) + sorted(
        k for k in placed & ended if k not in snaps
    )
    v.stuck = len(stuck)
    if stuck:
        v.problems.append(f"{v.stuck} saga(s) not ended or not archived: {stuck[:5]}")
    for s in snaps.values():
        v.outcomes[s["status"] if s["status"] == "completed" else f"cancelled: {s['reason']}"] += 1

    charges = Counter(e.order_id for e in entries if e.kind == "charge")
    refunds = Counter(e.order_id for e in entries if e.kind == "refund")
    v.double_charges = sum(1 for n in charges.values() if n > 1)
    v.double_refunds = sum(1 for n in refunds.values() if n > 1)
    completed = {k for k, o in oms.items() if o.status == "completed"}
    net: Counter[str] = Counter()
    for e in entries:
        net[e.customer_id] += e.amount if e.kind == "charge" else -e.amount
    owed = sum(oms[k].total for k in completed)
    refunded_uncharged = set(refunds) - set(charges)
    balanced = all(
        (RICH if c.startswith("c") else POOR) - balance == net[c] for c, balance in balances.items()
    )
    # Each entry belongs to its order: its customer, its total.
    misbooked = [
        e.order_id
        for e in entries
        if e.order_id not in oms
        or e.customer_id != oms[e.order_id].customer_id
        or e.amount != oms[e.order_id].total
    ]
    charged_completed = all(charges[k] - refunds[k] == 1 for k in completed)
    charged_cancelled = all(charges[k] == refunds[k] for k in oms.keys() - completed)
    v.money_conserved = (
        sum(net.values()) == owed
        and balanced
        and charged_completed
        and charged_cancelled
        and not refunded_uncharged
        and not misbooked
    )
    if not v.money_conserved:
        v.problems.append(
            f"money: charged - refunded = {sum(net.values())}, completed orders owe {owed}; "
            f"balances match the ledger: {balanced}; every completed order charged once: "
            f"{charged_completed}; every cancelled one refunded in full: {charged_cancelled}; "
            f"entries not matching their order's customer and total: {misbooked[:5]}"
        )

    reserved = {r.sku: r.reserved for r in shelves}
    on_books = Counter[str]()
    for r in held:
        for sku, quantity in r.lines:
            on_books[sku] += quantity
    total = sum(r.on_hand + r.reserved for r in shelves)
    per_sku = all(
        r.on_hand + r.reserved == (INITIAL_STOCK if r.sku in PRICES else 0) for r in shelves
    )
    # What is held for an order is what the order asked for.
    created = await _rows(
        app, "OrderHistory", select(timeline).where(timeline.c.event_type == "OrderCreated")
    )
    ordered = {
        r.order_id: sorted((i["sku"], i["quantity"]) for i in r.payload["items"]) for r in created
    }
    lines_match = all(sorted(map(tuple, r.lines)) == ordered.get(r.order_id) for r in held)
    v.stock_conserved = (
        total == INITIAL_STOCK * len(PRICES)
        and per_sku
        and lines_match
        and {r.order_id for r in held} == completed
        and all(reserved[sku] == on_books[sku] for sku in reserved)
    )
    if not v.stock_conserved:
        v.problems.append(
            f"stock: on hand + reserved = {total}, at start {INITIAL_STOCK * len(PRICES)}; "
            f"every sku conserved: {per_sku}; held lines match the orders: {lines_match}; "
            f"{len(held)} reservations held for {len(completed)} completed orders"
        )

    paths = {tuple(step.event for step in o.steps): o.terminal for o in outcome_paths(registry)[0]}
    wrong = [
        k
        for k, s in snaps.items()
        if paths.get(tuple(s["events"])) != s["status"]
        or oms.get(k) is None
        or oms[k].status != s["status"]
    ]
    v.snapshots_ok = not wrong and snaps.keys() == placed & ended
    if not v.snapshots_ok:
        v.problems.append(
            f"{len(wrong)} snapshot(s) off their registry path or OMS status: {wrong[:5]}; "
            f"{len(snaps)} snapshots for {len(placed & ended)} ended orders"
        )

    ghosts = set(ghost_sagas)
    if ghosts:
        touched = [
            (part.runner.name, r.saga_id)
            for part in app.services
            for r in await _rows(
                app,
                part.runner.name,
                select(tables.saga_state.c.saga_id).where(tables.saga_state.c.saga_id.in_(ghosts)),
            )
        ]
        if touched:
            v.poison_dead_lettered = False
            v.problems.append(f"events of sagas nobody placed changed state: {touched[:5]}")

    try:
        found = letters(await app.bus.read_all(registry.dead_letter_topic.name)) if app.bus else []
    except EngineError as exc:  # the broker is down: judge the rest all the same
        v.dlq_read = False
        v.problems.append(f"the dead-letter topic could not be read: {exc}")
        return v
    v.dlq = len(found)
    wanted = {
        (key, s.runner.name)
        for key, kind in (dead_keys or {}).items()
        for s in app.services
        if s.runner.machine.takes(kind)
    }
    missing = wanted - {(d.saga_id, d.service) for d in found}
    if missing:
        v.poison_dead_lettered = False
        v.problems.append(
            f"{len(missing)} poison record(s) not dead-lettered: {sorted(missing)[:5]}"
        )
    return v
