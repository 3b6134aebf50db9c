"""One chaos run: the checkout's six services as OS processes on a bus of their own, a
load of orders with a mix of outcomes, and meanwhile SIGKILLs, broker restarts and poison
records; then quiescence and the checker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from chaos.checker import Verdict, check
from chaos.cluster import ROOT, Broker, ServiceProcesses
from chaos.errors import ChaosError
from chaos.poison import GHOST_TYPE, HugeSender, Poisoner, unreadable_writer
from handlers.shop import Mix, Shop
from saga_registry.engine import tables
from saga_registry.engine.app import Application
from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.config import Settings
from saga_registry.engine.deadletter import letters
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope, EngineError
from saga_registry.registry import CodegenError, load_registry

log = logging.getLogger("saga.chaos")

SERVICES = ("OMS", "Cart", "Inventory", "Payment", "Logistics", "OrderHistory")
MIX = Mix(stock=0.1, payment=0.05, price=0.05)
OPTIONS = ["payment.bank_failure=0.05", "logistics.provider_failure=0.1"]


@dataclass(frozen=True)
class Plan:
    """What a run does."""

    bus: str
    sagas: int
    kills: int = 0
    broker_restarts: int = 0
    seed: int = 1
    rate: float = 50.0
    poison_volleys: int = 3
    quiet_timeout_s: float = 180.0
    restart_timeout_s: float = 300.0


@dataclass(frozen=True)
class Restart:
    """One SIGKILL and restart of the broker: when (seconds into the run), and how long it
    took to answer again, or why it did not within the plan's `restart_timeout_s`."""

    at_s: float
    up_again_s: float | None = None
    error: str | None = None


@dataclass
class Outcome:
    """What happened, and the checker's verdict."""

    plan: Plan
    verdict: Verdict
    kills: list[tuple[float, str]] = field(default_factory=list)
    broker_restarts: list[Restart] = field(default_factory=list)
    poison: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, int]] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    quiet: bool = False
    incidents: list[str] = field(default_factory=list)
    """What went wrong in carrying out the plan (a broker restart that failed, a poison
    volley never sent): each is a problem of the report and fails the run."""

    def to_json(self) -> dict[str, Any]:
        """The report's promised keys first, then the details."""
        v = self.verdict
        return {
            "sagas": v.sagas,
            "terminal": v.terminal,
            "stuck": v.stuck,
            "lost": v.lost,
            "double_charges": v.double_charges,
            "double_refunds": v.double_refunds,
            "stock_conserved": v.stock_conserved,
            "money_conserved": v.money_conserved,
            "snapshots_ok": v.snapshots_ok,
            "kills": len(self.kills),
            "broker_restarts": len(self.broker_restarts),
            "dlq": v.dlq,
            "ok": self.ok,
            "bus": self.plan.bus,
            "seed": self.plan.seed,
            "rate": self.plan.rate,
            "seconds": round(self.seconds, 1),
            "quiescent": self.quiet,
            "outcomes": dict(sorted(v.outcomes.items())),
            "poison_sent": dict(sorted(self.poison.items())),
            "poison_dead_lettered": v.poison_dead_lettered,
            "killed": [{"at_s": round(t, 2), "service": s} for t, s in self.kills],
            "broker_restarted": [
                {
                    "at_s": round(r.at_s, 2),
                    "up_again_s": None if r.up_again_s is None else round(r.up_again_s, 1),
                    "error": r.error,
                }
                for r in self.broker_restarts
            ],
            "broker_restart_failures": sum(r.error is not None for r in self.broker_restarts),
            "crashes": [{"service": s, "exit_code": c} for s, c in self.crashes],
            "exit_codes": self.exit_codes,
            "problems": [*self.incidents, *v.problems],
        }

    @property
    def ok(self) -> bool:
        """The verdict holds, nothing crashed on its own and every service stopped cleanly."""
        return (
            self.verdict.ok
            and self.quiet
            and not self.incidents
            and not self.crashes
            and all(code == 0 for code in self.exit_codes.values())
        )


async def run(plan: Plan, work: Path) -> Outcome:
    """Carry out `plan` with its state in `work`; raises `ChaosError` if it cannot be set
    up (the registry, the first start of the broker, the driver's databases).

    Once the services run, the run always ends with the checker's verdict: a broker
    restart that fails or is slower than `plan.restart_timeout_s`, a poison volley that
    cannot be sent, or a dead-letter topic that cannot be read is an incident of the
    outcome (and fails it), not a reason to stop without a verdict."""
    rng = random.Random(plan.seed)
    registry_path = str(ROOT / "registry" / "saga.yaml")
    try:
        registry = load_registry(registry_path)
    except CodegenError as exc:
        raise ChaosError(f"registry: {str(exc).splitlines()[0]}") from None
    broker = Broker(work / "kafka") if plan.bus == "kafka" else None
    bus_url = f"kafka://{broker.bootstrap}" if broker else f"embedded:{work}/bus.db"
    db_url = f"sqlite:///{work}/{{service}}.db"
    (work / "logs").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "SAGA_REGISTRY": registry_path,
        "SAGA_BUS": bus_url,
        "SAGA_DB_URL": db_url,
        "SAGA_LOG_LEVEL": "WARNING",
    }
    procs = ServiceProcesses(list(SERVICES), env, work / "logs", OPTIONS)
    # The driver has every service's database open (it places orders as OMS does, and
    # the checker reads them all) but runs none of them.
    app = Application(Settings(registry=registry_path, bus=bus_url, db=db_url), registry)
    outcome = Outcome(plan, Verdict())
    began = time.monotonic()
    try:
        if broker:
            await asyncio.to_thread(broker.start)
        await app.start()
        shop = Shop(app)
        await shop.seed(customers=50)
        procs.start_all()
        assert app.bus is not None
        topic = registry.events_topic.name
        huge = HugeSender(broker.bootstrap, topic) if broker else None
        poisoner = Poisoner(
            app.bus,
            topic,
            "chaos/poisoner",
            rng,
            send_huge=huge,
            send_unreadable=unreadable_writer(app.bus),
        )
        if poisoner.send_unreadable is None:
            log.warning("kcat is not installed: no undecodable records in the poison volleys")
        outcome.poison = poisoner.sent
        window = plan.sagas / plan.rate
        placed: list[str] = []
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_load(shop, plan, placed)),
            asyncio.create_task(_kills(procs, plan, rng, window, began, outcome)),
            asyncio.create_task(_broker(broker, plan, rng, window, began, outcome)),
            asyncio.create_task(_poison(app, poisoner, plan, rng, window, outcome)),
        ]
        watcher = asyncio.create_task(_watch(procs, stop))
        try:
            await asyncio.gather(*tasks)
            outcome.quiet = await _quiesce(app, shop, poisoner, len(placed), plan.quiet_timeout_s)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
            if huge is not None:
                await huge.stop()
            outcome.exit_codes = procs.stop_all()
            outcome.crashes = procs.crashes
        outcome.verdict = await check(
            app, registry, placed, poisoner.dead_keys, poisoner.ghost_sagas
        )
        for name, code in outcome.exit_codes.items():
            if code != 0:
                outcome.verdict.problems.append(
                    f"{name} exited {code} on SIGTERM: {procs.tail(name, 600)!r}"
                )
        outcome.seconds = time.monotonic() - began
        return outcome
    except EngineError as exc:
        raise ChaosError(str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            procs.stop_all()
        await app.stop()
        if broker:
            with contextlib.suppress(ChaosError):
                broker.stop()


async def _load(shop: Shop, plan: Plan, placed: list[str]) -> None:
    """Place the orders at `plan.rate` per second, in small batches."""
    batch = max(1, round(plan.rate / 10))
    started = time.monotonic()
    n = 0
    while n < plan.sagas:
        count = min(batch, plan.sagas - n)
        envs = await shop.place(count, MIX, seed=plan.seed * 1_000_003 + n, prefix=f"o{n:06d}")
        placed.extend(e.saga_id for e in envs)
        n += count
        await asyncio.sleep(max(0.0, started + n / plan.rate - time.monotonic()))


async def _kills(
    procs: ServiceProcesses,
    plan: Plan,
    rng: random.Random,
    window: float,
    began: float,
    outcome: Outcome,
) -> None:
    """SIGKILL a random service at random moments of the load window; restart it after a
    random pause (up to 1.5 s, some at once)."""
    moments = sorted(rng.uniform(0, window) for _ in range(plan.kills))
    started = time.monotonic()
    for at in moments:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        name = rng.choice(SERVICES)
        procs.kill(name)
        outcome.kills.append((time.monotonic() - began, name))
        await asyncio.sleep(rng.choice((0.0, rng.uniform(0, 1.5))))
        procs.start(name)


async def _broker(
    broker: Broker | None,
    plan: Plan,
    rng: random.Random,
    window: float,
    began: float,
    outcome: Outcome,
) -> None:
    """SIGKILL the broker at random moments of the load window and start it again. A
    restart that fails or does not answer within `plan.restart_timeout_s` is recorded
    with its reason, and the run goes on: the services wait for the broker, the verdict
    tells what came of it."""
    if broker is None or not plan.broker_restarts:
        return
    moments = sorted(rng.uniform(window * 0.1, window * 0.9) for _ in range(plan.broker_restarts))
    started = time.monotonic()
    for at in moments:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        killed_at = time.monotonic() - began
        broker.kill()
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        try:
            took = await asyncio.to_thread(broker.start, plan.restart_timeout_s)
        except ChaosError as exc:
            outcome.broker_restarts.append(Restart(killed_at, error=str(exc)))
            outcome.incidents.append(f"broker restart at {killed_at:.1f} s: {exc}")
            log.warning("broker restart at %.1f s failed: %s", killed_at, exc)
        else:
            outcome.broker_restarts.append(Restart(killed_at, up_again_s=took))


async def _poison(
    app: Application,
    poisoner: Poisoner,
    plan: Plan,
    rng: random.Random,
    window: float,
    outcome: Outcome,
) -> None:
    """Volleys of hostile records at random moments of the load window."""
    assert app.bus is not None
    moments = sorted(rng.uniform(0, window) for _ in range(plan.poison_volleys))
    started = time.monotonic()
    for at in moments:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        # As long as a broker restart may take, and a minute more: a broker that never
        # came back must not hold the run (and its verdict) for much longer.
        give_up = time.monotonic() + plan.restart_timeout_s + 60
        for attempt in itertools.count(1):
            try:
                history = await app.bus.read_all(poisoner.topic)
                # Replays are of the saga's own events, not of earlier poison.
                old: list[Record] = [
                    d.record for d in history if d.record.key.startswith(b"o") and _is_event(d)
                ]
                await poisoner.volley(rng.sample(old, min(3, len(old))))
                break
            except EngineError as exc:  # the broker is restarting: try again
                if time.monotonic() >= give_up:
                    outcome.incidents.append(f"poison volley failed {attempt} times: {exc}")
                    return
                log.info("poison volley postponed: %s", exc)
                await asyncio.sleep(1.0)


def _is_event(delivery: Delivery) -> bool:
    try:
        Envelope.from_record(delivery.record)
    except BadEnvelope:
        return False
    return True


async def _watch(procs: ServiceProcesses, stop: asyncio.Event) -> None:
    """Restart services that die on their own (counted as crashes)."""
    while not stop.is_set():
        procs.revive()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _quiesce(
    app: Application, shop: Shop, poisoner: Poisoner, placed: int, timeout_s: float
) -> bool:
    """Wait until every placed order is archived, every outbox is empty and every service
    has read every poison record (dead-lettered it, or skipped the unknown saga's event);
    gives up when nothing has moved for `timeout_s` (longer than the registry's longest
    deadline)."""
    last: tuple[int, int] = (-1, -1)
    moved = time.monotonic()
    while time.monotonic() - moved < timeout_s:
        done = await shop.archived()
        pending = 0
        for part in app.services:
            async with part.db.transaction() as conn:
                pending += int(
                    await conn.scalar(
                        select(func.count())
                        .select_from(tables.outbox)
                        .where(tables.outbox.c.sent_at.is_(None))
                    )
                    or 0
                )
        unread = -1
        if done >= placed and not pending:
            try:
                unread = await _poison_unread(app, poisoner)
            except EngineError as exc:  # the broker is away: not quiet yet
                log.info("dead-letter topic not readable yet: %s", exc)
        if unread == 0:
            return True
        if (done, unread) != last:
            last, moved = (done, unread), time.monotonic()
        await asyncio.sleep(0.5)
    return False


async def _poison_unread(app: Application, poisoner: Poisoner) -> int:
    """How many (poison record, service) pairs are not handled yet."""
    assert app.bus is not None and app.registry is not None
    found = letters(await app.bus.read_all(app.registry.dead_letter_topic.name))
    lettered = {(d.saga_id, d.service) for d in found}
    unread = 0
    for part in app.services:
        name = part.runner.name
        machine = part.runner.machine
        unread += sum(
            (key, name) not in lettered
            for key, kind in poisoner.dead_keys.items()
            if machine.takes(kind)
        )
        if not machine.takes(GHOST_TYPE):
            continue
        async with part.db.transaction() as conn:
            skipped = set(
                await conn.scalars(
                    select(tables.skipped.c.saga_id).where(
                        tables.skipped.c.saga_id.in_(sorted(poisoner.ghost_sagas))
                    )
                )
            )
        unread += len(poisoner.ghost_sagas - skipped)
    return unread
