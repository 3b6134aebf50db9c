"""The engine under load: the checkout's real services, warm-up first, then the measured
sagas.

- embedded: every service in this one process (as `saga demo` runs them), a fresh
  embedded log and one SQLite database per service in a temporary folder.
- kafka: each service in its own OS process (`python -m saga_registry run NAME`, as in
  production), fresh topics on the broker; this process only places orders and reads
  OrderHistory's archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.driver import Driver, Timings
from bench.errors import BenchError
from bench.procstats import ProcessSampler, ProcessStats, broker_pid
from bench.scenario import CUSTOMERS, FINAL_SERVICE
from handlers.shop import Shop
from saga_registry.engine.app import Application
from saga_registry.engine.config import Settings
from saga_registry.engine.runner import RunnerSettings
from saga_registry.registry.model import Registry

ROOT = Path(__file__).resolve().parents[1]
"""The project root: the services' code (`handlers/`) is found from there."""

ALL_SERVICES = "all-services"


@dataclass(frozen=True, slots=True)
class Load:
    """How much to run and how."""

    sagas: int
    warmup: int
    rate: float | None
    timeout_s: float


@dataclass(frozen=True, slots=True)
class EngineResult:
    """The measured sagas' timings, what each service process used, and the deliveries
    the services took in (inbox rows over all databases, warm-up included)."""

    timings: Timings
    processes: dict[str, ProcessStats]
    inbox_rows: dict[str, int]
    """Per service."""
    broker: ProcessStats | None = None
    """What the Kafka broker's JVM used in the measured run, if it runs on this machine."""


def inbox_rows(registry: Registry, state: Path) -> dict[str, int]:
    """Inbox rows in each service's SQLite database in `state`: one per delivery the
    service took in (it ran its reaction or judged it; passed events leave none)."""
    rows = {}
    for service in registry.services:
        path = state / f"{service.name.lower()}.db"
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows[service.name] = int(conn.execute("SELECT count(*) FROM saga_inbox").fetchone()[0])
    return rows


async def settled_inbox_rows(
    registry: Registry, state: Path, quiet_s: float = 1.0, timeout_s: float = 60.0
) -> dict[str, int]:
    """`inbox_rows` once no service has taken anything in for `quiet_s`: a saga ends at
    the service the driver watches while others (OMS's copy of the last event, say) may
    still be reading theirs, and no saga is placed any more. After `timeout_s`, the rows
    as they are."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    rows = inbox_rows(registry, state)
    while loop.time() < end:
        await asyncio.sleep(quiet_s)
        now = inbox_rows(registry, state)
        if now == rows:
            break
        rows = now
    return rows


async def run_embedded(
    registry: Registry, registry_path: Path, state: Path, load: Load, metrics: bool = False
) -> EngineResult:
    """Every service in this process on an embedded log in `state` (serving Prometheus
    metrics if `metrics`)."""
    settings = Settings(
        registry=str(registry_path),
        bus=f"embedded:{state}/bus.db",
        db=f"sqlite:///{state}/{{service}}.db",
        runner=RunnerSettings(poll_timeout_s=0.05),
        metrics_port=0 if metrics else None,
    )
    app = Application(settings, registry=registry)
    stop = asyncio.Event()
    try:
        await app.start()
        running = asyncio.create_task(app.run(stop), name="bench.app")
        shop = Shop(app)
        await shop.seed(CUSTOMERS)

        def check() -> None:
            if running.done():
                raise BenchError(f"the services stopped: {running.exception()!r}")

        driver = Driver(shop.parts["OMS"].runner, shop.parts[FINAL_SERVICE].db, check=check)
        sampler = ProcessSampler({ALL_SERVICES: os.getpid()})
        await sampler.start()
        await driver.warm_up(load.warmup, load.timeout_s)
        sampler.mark()
        timings = await driver.measure(load.sagas, load.rate, load.timeout_s)
        processes = sampler.stats()
        await sampler.stop()
        rows = await settled_inbox_rows(registry, state)
        stop.set()
        await running
        return EngineResult(timings, processes, rows)
    finally:
        stop.set()
        await app.stop()


async def run_kafka(
    registry: Registry,
    registry_path: Path,
    state: Path,
    bootstrap: str,
    load: Load,
    metrics: bool = False,
) -> EngineResult:
    """Each service in its own OS process on Kafka at `bootstrap` (serving Prometheus
    metrics if `metrics`); logs go to `state`."""
    bus = f"kafka://{bootstrap}"
    db = f"sqlite:///{state}/{{service}}.db"
    # The driver's own view: OMS to place orders, OrderHistory to see them end, Inventory
    # and Payment to seed stock and accounts. It never runs them: the processes do.
    app = Application(
        Settings(
            registry=str(registry_path),
            bus=bus,
            db=db,
            services=("OMS", "Inventory", "Payment", FINAL_SERVICE),
        ),
        registry=registry,
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[IO[bytes]] = []
    try:
        await app.start()
        shop = Shop(app)
        await shop.seed(CUSTOMERS)
        served = {"SAGA_METRICS_PORT": "0"} if metrics else None
        procs.update(start_services(registry, registry_path, bus, db, state, logs, env=served))

        def check() -> None:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    tail = (state / f"{name}.log").read_text(errors="replace").strip()
                    last = tail.splitlines()[-1] if tail else "no output"
                    raise BenchError(f"service {name} exited ({proc.returncode}): {last}")

        driver = Driver(shop.parts["OMS"].runner, shop.parts[FINAL_SERVICE].db, check=check)
        sampler = ProcessSampler({name: p.pid for name, p in procs.items()})
        jvm = broker_pid(bootstrap)
        broker = ProcessSampler({"broker": jvm}) if jvm is not None else None
        await sampler.start()
        if broker is not None:
            await broker.start()
        # The warm-up also waits for every consumer group to be joined: at least one saga.
        await driver.warm_up(max(load.warmup, 1), load.timeout_s)
        sampler.mark()
        if broker is not None:
            broker.mark()
        timings = await driver.measure(load.sagas, load.rate, load.timeout_s)
        processes = sampler.stats()  # CPU times can only be read before they exit
        await sampler.stop()
        jvm_stats = None
        if broker is not None:
            jvm_stats = broker.stats()["broker"]
            await broker.stop()
        rows = await settled_inbox_rows(registry, state)
        return EngineResult(timings, processes, rows, jvm_stats)
    finally:
        await stop_all(procs)
        for log in logs:
            log.close()
        await app.stop()


def start_services(
    registry: Registry,
    registry_path: Path,
    bus: str,
    db: str,
    state: Path,
    logs: list[IO[bytes]],
    env: dict[str, str] | None = None,
) -> dict[str, subprocess.Popen[bytes]]:
    """Each service of `registry` in its own `saga run` process on `bus` and `db`, logging
    to `state/<name>.log` (the open files are added to `logs`); `env` adds settings."""
    environment = {
        **os.environ,
        "SAGA_REGISTRY": str(registry_path),
        "SAGA_BUS": bus,
        "SAGA_DB_URL": db,
        "SAGA_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    procs = {}
    for service in registry.services:
        log: IO[bytes] = (state / f"{service.name}.log").open("wb")
        logs.append(log)
        # Log files, not pipes: a service blocked on a full pipe would stall the run.
        procs[service.name] = subprocess.Popen(
            [sys.executable, "-m", "saga_registry", "run", service.name],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return procs


async def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        for _ in range(300):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            proc.kill()
            proc.wait()
