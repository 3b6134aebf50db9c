"""`saga run`: the runtime's command. Settings come from flags, then
environment variables, read here once and passed down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import click

from saga_registry.cli import logs
from saga_registry.cli.options import (
    bus_option,
    db_option,
    fail,
    kafka_security,
    package_option,
    registry_option,
)
from saga_registry.engine.app import Application
from saga_registry.engine.buses import KafkaOptions
from saga_registry.engine.config import Settings
from saga_registry.engine.errors import BusRefused, BusUnavailable, EngineError
from saga_registry.engine.retention import RetentionSettings, parse_duration

log = logging.getLogger("saga.run")


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """Seconds, written as a number with an optional unit: 90, 60s, 30m, 12h, 7d."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command()
@click.argument("services", nargs=-1)
@registry_option
@bus_option
@db_option
@package_option
@kafka_security
@click.option(
    "--set",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting for the services, e.g. payment.bank_failure=0.1 (repeatable); "
    "the key must be one a service of the registry declares in its `options`.",
)
@click.option(
    "--allow-stubs",
    is_flag=True,
    envvar="SAGA_ALLOW_STUBS",
    help="Run even if reactions are still the generated stub (raise NotImplementedError).",
)
@click.option(
    "--log-level",
    type=click.Choice(logs.LEVELS, case_sensitive=False),
    default="INFO",
    envvar="SAGA_LOG_LEVEL",
    show_default=True,
    help="DEBUG logs a line per delivery (service, saga, event, outcome).",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS),
    default="text",
    envvar="SAGA_LOG_FORMAT",
    show_default=True,
    help="json: one JSON object per line, the delivery's fields as keys.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="SAGA_METRICS_PORT",
    help="Serve Prometheus metrics at http://ADDRESS:PORT/metrics (0: any free port).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    envvar="SAGA_METRICS_ADDRESS",
    show_default=True,
    help="The address the metrics endpoint listens on (0.0.0.0 for every interface).",
)
@click.option(
    "--wait-for-bus",
    "wait_s",
    default=60.0,
    envvar="SAGA_WAIT_FOR_BUS",
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to keep trying to reach the bus at start (a broker restarting).",
)
@click.option(
    "--dedupe-window",
    callback=_duration,
    metavar="DURATION",
    default="7d",
    envvar="SAGA_DEDUPE_WINDOW",
    show_default=True,
    help="Inbox and skipped rows of ended sagas older than this are pruned (60s, 12h, 7d).",
)
@click.option(
    "--log-retention",
    callback=_duration,
    metavar="DURATION",
    default="7d",
    envvar="SAGA_LOG_RETENTION",
    show_default=True,
    help="Records of the events topic kept this long (embedded log; new Kafka topics).",
)
@click.option(
    "--dead-letter-retention",
    callback=_duration,
    metavar="DURATION",
    default="30d",
    envvar="SAGA_DEAD_LETTER_RETENTION",
    show_default=True,
    help="Records of the dead-letter topic kept this long.",
)
@click.option(
    "--sent-outbox-retention",
    callback=_duration,
    metavar="DURATION",
    default="1h",
    envvar="SAGA_SENT_OUTBOX_RETENTION",
    show_default=True,
    help="Sent outbox rows kept this long.",
)
@click.option(
    "--prune-every",
    callback=_duration,
    metavar="DURATION",
    default="60s",
    envvar="SAGA_PRUNE_EVERY",
    show_default=True,
    help="Time between prune passes; 0 turns pruning off.",
)
def run(
    services: tuple[str, ...],
    registry: str,
    bus: str,
    db: str,
    package: str,
    kafka: KafkaOptions,
    options: tuple[str, ...],
    allow_stubs: bool,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_address: str,
    wait_s: float,
    dedupe_window: float,
    log_retention: float,
    dead_letter_retention: float,
    sent_outbox_retention: float,
    prune_every: float,
) -> None:
    """Run SERVICES (all of the registry's if none) until SIGINT or SIGTERM."""
    logs.configure(log_level, log_format)
    if len(services) != 1 and "{service}" not in db and not db.startswith("sqlite:///:memory"):
        fail(f"--db {db!r} has no {{service}}: each service owns its own database")
    # The services' code lives in the project the command runs in.
    sys.path.insert(0, os.getcwd())
    pairs = []
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            fail(f"--set {option!r}: expected KEY=VALUE")
        pairs.append((key.strip(), value.strip()))
    settings = Settings(
        registry=registry,
        bus=bus,
        db=db,
        services=services,
        package=package,
        kafka=kafka,
        options=tuple(pairs),
        allow_stubs=allow_stubs,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        retention=RetentionSettings(
            dedupe_window_s=dedupe_window,
            sent_outbox_s=sent_outbox_retention,
            log_retention_s=log_retention,
            dead_letter_retention_s=dead_letter_retention,
            every_s=prune_every,
        ),
    )
    try:
        asyncio.run(_run(settings, wait_s))
    except EngineError as exc:
        fail(str(exc))
    except asyncio.CancelledError:
        logs.say("saga run", "stopped at once; in-flight work left uncommitted")
        sys.exit(130)


STOP_GRACE_S = 7.0
"""How long SIGINT/SIGTERM lets the services finish; with closing, under 10 s in all."""


async def _run(settings: Settings, wait_s: float) -> None:
    app = Application(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()

    def stop_now(message: str) -> None:
        if current is not None and not current.done():
            logs.say("saga run", message)
            current.cancel()

    def on_signal() -> None:
        # First signal: finish the batch in hand and drain, for at most STOP_GRACE_S (a
        # reaction or a broker may never answer). Second signal, or the grace spent: stop
        # now; what was in flight is left uncommitted and will be delivered again.
        if stop.is_set():
            stop_now("second signal")
            return
        stop.set()
        loop.call_later(
            STOP_GRACE_S, stop_now, f"did not stop within {STOP_GRACE_S:g} s of the signal"
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    # Until the services are up, a failure is ours to report in one line; aiokafka's own
    # connection errors would only repeat it as noise.
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.setLevel(logging.CRITICAL)
    try:
        if not await _start(app, stop, wait_s):
            logs.say("saga run", "stopped before the bus answered")
            return
        kafka_log.setLevel(logging.WARNING)
        names = ", ".join(s.runner.name for s in app.services)
        logs.say("saga run", f"{names} on {settings.bus} (Ctrl-C to stop)")
        if app.metrics_server is not None:
            where = f"http://{settings.metrics_address}:{app.metrics_server.port}/metrics"
            logs.say("saga run", f"metrics on {where}")
        await app.run(stop)
        logs.say("saga run", "stopped cleanly")
    finally:
        await app.stop()


async def _start(app: Application, stop: asyncio.Event, wait_s: float) -> bool:
    """Start `app`; while the bus cannot be reached, try again for up to `wait_s` seconds
    (a service restarted while its broker restarts too should wait, not crash-loop).
    False if told to stop while waiting."""
    deadline = asyncio.get_running_loop().time() + wait_s
    warned, next_warning = False, wait_s
    while True:
        try:
            await app.start()
            return True
        except BusUnavailable as exc:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or stop.is_set() or isinstance(exc, BusRefused):
                raise
            if not warned or left < next_warning:
                log.warning("%s; trying again for %.0f s more", exc, left)
                warned, next_warning = True, left - 10
            await app.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, left))
            if stop.is_set():
                return False


__all__ = ["run"]
