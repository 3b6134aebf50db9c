"""The checkout project's own commands, added to `saga` (the engine knows nothing of
checkout; its CLI adds whatever `handlers.commands.COMMANDS` lists)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click

from codegen import CodegenError, load_registry
from codegen.model import Topic
from engine.app import Application
from engine.config import Settings
from engine.errors import EngineError
from engine.runner import RunnerSettings
from handlers.shop import Mix, Report, Shop

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
@click.option("--registry", default="registry/saga.yaml", envvar="SAGA_REGISTRY", show_default=True)
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
    settings: Settings, reg: object, orders: int, mix: Mix, timeout_s: float, seed: int
) -> Report:
    app = Application(settings, registry=reg)  # type: ignore[arg-type]
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


COMMANDS = [demo]
"""The commands this project adds to `saga`."""
