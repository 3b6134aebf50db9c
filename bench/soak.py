"""`python -m bench.soak`: a long run that shows whether state and logs level off.

Runs the checkout saga with the real services, as `python -m bench` does (embedded: every
service in this process; kafka: one process per service, `saga run`), placing N sagas
in steps; after each step has ended it prints the load average, the size of each
service's SQLite database and of the embedded log, and the row counts of the tables
retention prunes, summed over the services. The windows are small here (by default a
60 s dedupe window, 60 s log retention, 10 s for sent outbox rows, a pass every 5 s), so
that the pruned tables level off within the run. `saga_state` grows by one row per saga
and service by design (it is what refuses old duplicates), and the services' own
tables (OrderHistory's archive, Payment's ledger) grow with the business.

This is not a test: it measures. A bad command line is one line and exit status 2; a
run that fails, one line and 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.args import Parser, positive_int, run_in_state
from bench.engine_run import ROOT, start_services, stop_all
from bench.errors import BenchError
from bench.scenario import CUSTOMERS, FINAL_SERVICE, Orders, fresh_registry
from handlers.oms import record_order
from handlers.order_history import archive
from handlers.shop import Shop
from saga_registry.engine.app import Application
from saga_registry.engine.config import Settings
from saga_registry.engine.database import Database
from saga_registry.engine.retention import RetentionSettings, parse_duration
from saga_registry.engine.runner import RunnerSettings, ServiceRunner

PRUNED = ("saga_inbox", "saga_skipped", "saga_outbox", "saga_timers", "saga_state")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m bench.soak",
        description="Database and log sizes, and the pruned tables' rows, as sagas go by.",
    )
    p.add_argument("--bus", choices=("embedded", "kafka"), default="embedded")
    p.add_argument("--sagas", type=positive_int, default=200_000, help="sagas in all")
    p.add_argument("--step", type=positive_int, default=20_000, help="sagas per step")
    p.add_argument("--dedupe-window", type=_duration, default=60.0)
    p.add_argument("--log-retention", type=_duration, default=60.0)
    p.add_argument("--sent-outbox-retention", type=_duration, default=10.0)
    p.add_argument("--prune-every", type=_duration, default=5.0)
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("SAGA_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka HOST:PORT (default: $SAGA_KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
    )
    p.add_argument("--registry", type=Path, default=ROOT / "registry" / "saga.yaml")
    p.add_argument("--timeout", type=_duration, default=3600.0, help="per step")
    p.add_argument("--keep", action="store_true", help="keep the databases and logs")
    return p


def _retention(args: argparse.Namespace) -> RetentionSettings:
    return RetentionSettings(
        dedupe_window_s=args.dedupe_window,
        sent_outbox_s=args.sent_outbox_retention,
        log_retention_s=args.log_retention,
        every_s=args.prune_every,
    )


def _mb(path: Path) -> float:
    """The file's size with its WAL, in MB (0 if absent)."""
    size = 0
    for p in (path, path.with_name(path.name + "-wal")):
        if p.exists():
            size += p.stat().st_size
    return size / 1e6


def _table_bytes(path: Path) -> dict[str, int]:
    """Bytes of each table and index in the SQLite file at `path` (free pages apart)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        return {**{str(n): int(b) for n, b in rows}, "(free pages)": free * size}
    except sqlite3.OperationalError:  # an SQLite built without dbstat
        return {}
    finally:
        conn.close()


def _rows(path: Path, table: str) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


class Soak:
    """Places sagas through OMS, waits for their end, and prints a row per step."""

    def __init__(
        self,
        oms: ServiceRunner,
        history: Database,
        state: Path,
        services: list[str],
        bus: str,
        check: Callable[[], None],
    ) -> None:
        self.oms = oms
        self.history = history
        self.state = state
        self.services = services
        self.bus = bus
        self.check = check
        self._orders = Orders()
        self._started = time.monotonic()

    def header(self) -> None:
        db = " ".join(f"{s[:9]:>9}" for s in self.services)
        rows = " ".join(f"{t.removeprefix('saga_'):>9}" for t in PRUNED)
        print(
            f"{'sagas':>8} {'s':>6} {'saga/s':>6} {'load1':>5} {'log MB':>7} "
            f"{db} {rows} {'log rows':>9}"
        )
        print(
            f"{'':>8} {'':>6} {'':>6} {'':>5} {'':>7} {'(service DB files, MB)':^{len(db)}} "
            f"{'(rows, all services)':^{len(rows)}}"
        )
        sys.stdout.flush()

    async def step(self, first: int, count: int, timeout_s: float) -> None:
        """Place sagas `first`..`first + count - 1`, wait for all to end, print a row."""
        began = time.monotonic()
        for i in range(first, first + count):
            event = self._orders.make(f"soak-{i:08d}")

            async def effects(conn: AsyncConnection, event: Any = event) -> None:
                await record_order(conn, event)

            await self.oms.initiate(event, effects)
        target = first + count
        deadline = began + timeout_s
        while True:
            async with self.history.transaction() as conn:
                done = int(await conn.scalar(select(func.count()).select_from(archive)) or 0)
            if done >= target:
                break
            self.check()
            if time.monotonic() > deadline:
                raise BenchError(f"step ending at {target}: only {done} sagas ended in time")
            await asyncio.sleep(0.2)
        self.row(target, count / (time.monotonic() - began))

    def breakdown(self) -> None:
        """Where the bytes of the service databases are at the end, summed, largest first."""
        total: dict[str, int] = {}
        for s in self.services:
            for name, size in _table_bytes(self.state / f"{s.lower()}.db").items():
                total[name] = total.get(name, 0) + size
        if not total:
            return
        print("\nbytes by table and index, all service databases (MB):")
        for name, size in sorted(total.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {name:<32} {size / 1e6:>8.2f}")
        sys.stdout.flush()

    def row(self, sagas: int, rate: float) -> None:
        files = {s: self.state / f"{s.lower()}.db" for s in self.services}
        sizes = " ".join(f"{_mb(files[s]):>9.2f}" for s in self.services)
        counts = " ".join(f"{sum(_rows(f, t) for f in files.values()):>9}" for t in PRUNED)
        log_file = self.state / "bus.db"
        log_mb = f"{_mb(log_file):>7.2f}" if self.bus == "embedded" else f"{'-':>7}"
        log_rows = f"{_rows(log_file, 'records'):>9}" if self.bus == "embedded" else f"{'-':>9}"
        elapsed = time.monotonic() - self._started
        load1 = os.getloadavg()[0]
        print(
            f"{sagas:>8} {elapsed:>6.0f} {rate:>6.0f} {load1:>5.2f} {log_mb} "
            f"{sizes} {counts} {log_rows}"
        )
        sys.stdout.flush()


async def _soak(args: argparse.Namespace, state: Path) -> None:
    run_id = uuid.uuid4().hex[:8]
    registry_path, registry = fresh_registry(args.registry, run_id, state)
    services = [s.name for s in registry.services]
    db = f"sqlite:///{state}/{{service}}.db"
    print(
        f"soak {run_id}: {args.sagas} sagas in steps of {args.step} on {args.bus}; dedupe "
        f"window {args.dedupe_window:g} s, log retention {args.log_retention:g} s, sent "
        f"outbox {args.sent_outbox_retention:g} s, a pass every {args.prune_every:g} s; "
        f"state in {state}",
        file=sys.stderr,
    )
    kafka = args.bus == "kafka"
    settings = Settings(
        registry=str(registry_path),
        bus=f"kafka://{args.bootstrap}" if kafka else f"embedded:{state}/bus.db",
        db=db,
        # On Kafka the services run in processes of their own; this one only places
        # orders through OMS's database and reads OrderHistory's.
        services=("OMS", "Inventory", "Payment", FINAL_SERVICE) if kafka else (),
        runner=RunnerSettings(poll_timeout_s=0.05),
        retention=_retention(args),
    )
    app = Application(settings, registry=registry)
    stop = asyncio.Event()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[IO[bytes]] = []
    running: asyncio.Task[None] | None = None
    try:
        await app.start()
        shop = Shop(app)
        await shop.seed(CUSTOMERS)
        if kafka:
            windows = {
                "SAGA_DEDUPE_WINDOW": f"{args.dedupe_window}",
                "SAGA_LOG_RETENTION": f"{args.log_retention}",
                "SAGA_SENT_OUTBOX_RETENTION": f"{args.sent_outbox_retention}",
                "SAGA_PRUNE_EVERY": f"{args.prune_every}",
            }
            procs = start_services(
                registry, registry_path, settings.bus, settings.db, state, logs, windows
            )
        else:
            running = asyncio.create_task(app.run(stop), name="soak.app")

        def check() -> None:
            if running is not None and running.done():
                raise BenchError(f"the services stopped: {running.exception()!r}")
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise BenchError(f"service {name} exited ({proc.returncode}); see {state}")

        soak = Soak(
            shop.parts["OMS"].runner, shop.parts[FINAL_SERVICE].db, state, services, args.bus, check
        )
        soak.header()
        for first in range(0, args.sagas, args.step):
            await soak.step(first, min(args.step, args.sagas - first), args.timeout)
        soak.breakdown()
    finally:
        stop.set()
        if running is not None:
            await running
        await stop_all(procs)
        for log in logs:
            log.close()
        await app.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the soak; exit 0 when every step ended, 1 if the run failed, 2 on bad usage."""
    args = _parser().parse_args(argv)
    if not args.registry.is_file():
        _parser().error(f"--registry {args.registry}: no such file")
    run_in_state("soak", args.keep, lambda state: _soak(args, state))


if __name__ == "__main__":
    main()
