"""The checkout project's own commands, added to `saga` (the engine knows nothing of
checkout; its CLI adds whatever `handlers.commands.COMMANDS` lists): `demo`, `shop seed`,
`order place` and `history`. Following an order's saga across the services is the
engine's generic `saga trace ORDER_ID` (and `saga sagas` lists them all)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import click
import pydantic
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.cart import Cart, Unavailable
from handlers.catalog import CURRENCY, PRICES_WITH_SOLD_OUT
from handlers.oms import new_order, orders, record_order
from handlers.order_history import archive
from handlers.shop import Mix, Report, Shop
from saga_registry.cli.options import bus_option, db_option, fail, registry_option
from saga_registry.engine import tables
from saga_registry.engine.app import Application
from saga_registry.engine.config import Settings
from saga_registry.engine.errors import EngineError
from saga_registry.engine.runner import RunnerSettings
from saga_registry.registry import CodegenError, load_registry
from saga_registry.registry.model import Registry, Topic

_KINDS = ("stock", "payment", "delivery", "price")


def _parse_fail(text: str) -> dict[str, float]:
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        if not sep or kind not in _KINDS:
            raise click.BadParameter(
                f"{part!r}: expected KIND=SHARE with KIND one of {', '.join(_KINDS)}",
                param_hint="--fail",
            )
        try:
            share = float(value)
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: {value!r} is not a number", param_hint="--fail"
            ) from None
        if not 0 <= share <= 1:
            raise click.BadParameter(f"{part!r}: a share is between 0 and 1", param_hint="--fail")
        shares[kind] = share
    if shares.get("stock", 0) + shares.get("price", 0) + shares.get("payment", 0) / 2 > 1:
        raise click.BadParameter("the shares add up to more than 1", param_hint="--fail")
    return shares


@click.command()
@click.option("--orders", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option(
    "--fail",
    "fail",
    default="",
    metavar="KIND=SHARE,...",
    help="Shares of orders that fail: stock, payment, delivery, price.",
)
@click.option(
    "--bus",
    default="",
    envvar="SAGA_BUS",
    help="kafka://HOST:PORT, or embedded (default: a fresh log for this run).",
)
@registry_option
@click.option(
    "--timeout",
    "timeout_s",
    default=600.0,
    show_default=True,
    help="Seconds to wait for every saga to end.",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the order mix.")
def demo(orders: int, fail: str, bus: str, registry: str, timeout_s: float, seed: int) -> None:
    """Place ORDERS checkout orders, wait until every saga has ended, print the outcomes and
    check every invariant (exit status 1 if one fails or the wait times out)."""
    shares = _parse_fail(fail)
    try:
        reg = load_registry(registry)
    except CodegenError as exc:
        click.echo(f"error: registry {registry}: {str(exc).splitlines()[0]}", err=True)
        sys.exit(1)
    run_id = uuid.uuid4().hex[:8]
    # Each demo is its own world: fresh topics and databases, so a rerun never meets the
    # orders of an earlier one.
    reg = dataclasses.replace(
        reg,
        name=f"{reg.name}_demo_{run_id}",
        events_topic=Topic(f"{reg.events_topic.name}.demo-{run_id}", reg.events_topic.partitions),
        dead_letter_topic=Topic(f"{reg.dead_letter_topic.name}.demo-{run_id}", 1),
    )
    state = Path(tempfile.mkdtemp(prefix=f"saga-demo-{run_id}-"))
    options = (
        ("payment.bank_failure", str(shares.get("payment", 0) / 2)),
        ("logistics.provider_failure", str(shares.get("delivery", 0))),
    )
    settings = Settings(
        registry=registry,
        bus=bus or f"embedded:{state}/bus.db",
        db=f"sqlite:///{state}/{{service}}.db",
        options=options,
        runner=RunnerSettings(poll_timeout_s=0.05),
    )
    mix = Mix(
        stock=shares.get("stock", 0),
        payment=shares.get("payment", 0) / 2,
        delivery=shares.get("delivery", 0),
        price=shares.get("price", 0),
    )
    click.echo(f"demo {run_id}: {orders} orders on {settings.bus}, state in {state}")
    try:
        report = asyncio.run(_demo(settings, reg, orders, mix, timeout_s, seed))
    except EngineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    _print(report, orders)
    sys.exit(0 if report.ok and sum(report.outcomes.values()) == orders else 1)


async def _demo(
    settings: Settings, reg: Registry, orders: int, mix: Mix, timeout_s: float, seed: int
) -> Report:
    app = Application(settings, registry=reg)
    stop = asyncio.Event()
    try:
        await app.start()
        task = asyncio.create_task(app.run(stop))
        shop = Shop(app)
        await shop.seed(customers=50)
        started = time.perf_counter()
        with click.progressbar(length=orders, label="sagas ended", file=sys.stderr) as bar:
            seen = 0

            def tick(done: int) -> None:
                nonlocal seen
                bar.update(done - seen)
                seen = done

            await shop.place(orders, mix, seed=seed)
            finished = await shop.wait(orders, timeout_s, tick)
        elapsed = time.perf_counter() - started
        report = await shop.report(orders)
        report.seconds = elapsed
        if not finished:
            report.invariants["finished before the timeout"] = (
                False,
                f"{await shop.archived()}/{orders} ended within {timeout_s:g} s",
            )
        stop.set()
        await task
        return report
    finally:
        stop.set()
        await app.stop()


def _print(report: Report, orders: int) -> None:
    click.echo(
        f"\n{orders} orders in {report.seconds:.1f} s "
        f"({orders / max(report.seconds, 1e-9):.0f} sagas/s)\n"
    )
    click.echo(f"{'outcome':<58} {'orders':>7}")
    for outcome, count in sorted(report.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"{outcome:<58} {count:>7}")
    click.echo("\ninvariants")
    for name, (ok, detail) in report.invariants.items():
        click.echo(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")


def _app(registry: str, db: str, bus: str, services: tuple[str, ...]) -> Application:
    return Application(Settings(registry=registry, db=db, bus=bus, services=services))


async def _with_app(app: Application, work: Any) -> Any:
    try:
        await app.start()
        return await work(app)
    finally:
        await app.stop()


def _go(app: Application, work: Any) -> Any:
    try:
        return asyncio.run(_with_app(app, work))
    except EngineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.group()
def shop() -> None:
    """Set up the checkout shop's databases."""


@shop.command("seed")
@registry_option
@db_option
@bus_option
@click.option("--customers", default=50, show_default=True)
def shop_seed(registry: str, db: str, bus: str, customers: int) -> None:
    """Stock the warehouse and open accounts (rich c0.., poor p0..); idempotent."""

    async def work(app: Application) -> None:
        await Shop(app).seed(customers)

    _go(_app(registry, db, bus, ("Inventory", "Payment")), work)
    click.echo(f"seeded the warehouse and {customers} + {customers} accounts")


class OrderExists(EngineError):
    """An order id is placed once: it is the saga key."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} exists already: an order id is used once")


_OPTIONS = {"order_id": "--id", "customer_id": "--customer", "items": "--item"}


def _refused(exc: pydantic.ValidationError, registry: str) -> str:
    """The first error of the order's `OrderCreated`, named by the option that gave it."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    option = _OPTIONS.get(loc[0], "the order") if loc else "the order"
    field = ".".join(loc) or "payload"
    return f"{option}: {first['msg']} (OrderCreated.{field} in {registry})"


@click.group()
def order() -> None:
    """Orders, as a customer places them."""


@order.command("place")
@registry_option
@db_option
@bus_option
@click.option("--customer", required=True)
@click.option("--item", "items", multiple=True, required=True, metavar="SKU:QTY")
@click.option("--id", "order_id", default="", help="Order id (default: a new one).")
@click.option(
    "--no-cart-check",
    is_flag=True,
    help="Skip the cart's availability check (the warehouse still refuses).",
)
def order_place(
    registry: str,
    db: str,
    bus: str,
    customer: str,
    items: tuple[str, ...],
    order_id: str,
    no_cart_check: bool,
) -> None:
    """Check the cart against the stock, then place the order (OMS starts the saga; a
    running OMS service publishes it)."""
    lines: dict[str, int] = {}
    for item in items:
        sku, _, qty = item.partition(":")
        if sku not in PRICES_WITH_SOLD_OUT or not qty.isdigit() or int(qty) < 1:
            raise click.BadParameter(
                f"{item!r}: expected SKU:QTY with SKU one of {', '.join(PRICES_WITH_SOLD_OUT)}",
                param_hint="--item",
            )
        lines[sku] = lines.get(sku, 0) + int(qty)
    oid = order_id or f"order-{uuid.uuid4().hex[:12]}"
    try:
        # The generated event holds the registry's limits (`Id`: 1 to 64 characters).
        event = new_order(
            oid,
            customer,
            [(s, q, PRICES_WITH_SOLD_OUT[s]) for s, q in sorted(lines.items())],
            CURRENCY,
        )
    except pydantic.ValidationError as exc:
        fail(_refused(exc, registry))

    async def effects(conn: AsyncConnection) -> None:
        # The saga key starts one saga: an order id placed before (or a saga of that id
        # started otherwise) is refused before anything is written.
        taken = await conn.scalar(select(orders.c.order_id).where(orders.c.order_id == oid))
        started = await conn.scalar(
            select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == oid)
        )
        if taken is not None or started is not None:
            raise OrderExists(oid)
        await record_order(conn, event)

    async def work(app: Application) -> str:
        shop = Shop(app)
        try:
            if not no_cart_check:
                Cart.check_availability(lines, await shop.on_hand())
        except Unavailable as exc:
            raise EngineError(f"cart refused: {exc}") from None
        try:
            await shop.parts["OMS"].runner.initiate(event, effects)
        except IntegrityError:  # placed by another process since the check above
            raise OrderExists(oid) from None
        return oid

    click.echo(_go(_app(registry, db, bus, ("OMS", "Inventory")), work))


@click.command()
@click.argument("order_id")
@registry_option
@db_option
@bus_option
def history(order_id: str, registry: str, db: str, bus: str) -> None:
    """The archived snapshot of ORDER_ID, as the customer reads it."""

    async def work(app: Application) -> Any:
        async with Shop(app).parts["OrderHistory"].db.transaction() as conn:
            row = (
                await conn.execute(select(archive.c.snapshot).where(archive.c.order_id == order_id))
            ).first()
        return row.snapshot if row else None

    snapshot = _go(_app(registry, db, bus, ("OrderHistory",)), work)
    if snapshot is None:
        click.echo(f"error: no archived order {order_id} (not placed, or not ended yet)", err=True)
        sys.exit(1)
    click.echo(json.dumps(snapshot, indent=2, sort_keys=True))


COMMANDS = [demo, shop, order, history]
"""The commands this project adds to `saga`."""
