"""Run services: build each one's database, runner, outbox relay and deadline timers on a
shared bus, run them until told to stop, and stop them cleanly. Around the run, each
service's own `start` and `stop` hooks (`ServiceBase`) run its background work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from saga_registry.engine import retention
from saga_registry.engine.bus import Bus
from saga_registry.engine.buses import bus_from_url
from saga_registry.engine.config import Settings
from saga_registry.engine.custody import claim
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.deadletter import one_line
from saga_registry.engine.errors import ConfigError
from saga_registry.engine.handlers import event_types, load_services
from saga_registry.engine.metrics import Metrics
from saga_registry.engine.relay import OutboxRelay
from saga_registry.engine.runner import ServiceRunner
from saga_registry.engine.service import ServiceBase
from saga_registry.engine.signing import Keyring
from saga_registry.engine.timer_keys import move_index_timers
from saga_registry.engine.timers import DeadlineTimers
from saga_registry.engine.tracing import Tracing, from_environment, messaging_system
from saga_registry.registry import CodegenError, load_registry
from saga_registry.registry.errors import problem_line
from saga_registry.registry.model import Registry

if TYPE_CHECKING:
    from saga_registry.engine.prometheus import MetricsServer

log = logging.getLogger("saga.app")


@dataclass
class RunningService:
    """One service's parts."""

    service: ServiceBase
    runner: ServiceRunner
    relay: OutboxRelay
    timers: DeadlineTimers
    db: Database


class Application:
    """The services named in `settings` (all of the registry's if none), on one bus."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry | None = None,
        bus: Bus | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.tracing = tracing
        """The services' spans (`engine.tracing`): given, else as the standard `OTEL_*`
        variables ask at `start`; None: not traced."""
        self.metrics = Metrics()
        self.services: list[RunningService] = []
        self.metrics_server: MetricsServer | None = None
        """The Prometheus endpoint, once started (`Settings.metrics_port`)."""

    async def start(self) -> None:
        """Load, check and connect everything; raises an `EngineError` on a user mistake,
        and `DatabaseMismatch` for a database that is not its group's (`custody`)."""
        if self.registry is None:
            try:
                self.registry = load_registry(self.settings.registry)
            except CodegenError as exc:
                raise ConfigError(problem_line(self.settings.registry, exc)) from None
        reg = self.registry
        names = self.settings.services or tuple(s.name for s in reg.services)
        if self.tracing is None:
            # Before anything connects: a wrong OTEL_* setting is one line, at once.
            self.tracing = from_environment(names)
        types = event_types(self.settings.package)
        instances = load_services(
            reg,
            names,
            self.settings.package,
            dict(self.settings.options),
            allow_stubs=self.settings.allow_stubs,
        )
        keyring = _keyring(reg, names) if reg.signed_events else None
        if self.bus is None:
            self.bus = bus_from_url(self.settings.bus, kafka_options=self.settings.kafka)
        await self.bus.start()
        await retention.ensure_topics(self.bus, reg, self.settings.retention)
        for service in instances:
            name = service.service_name
            db = Database(database_url(self.settings.db, name), getattr(service, "metadata", None))
            await db.start()
            await move_index_timers(db, reg)
            relay = OutboxRelay(db, self.bus)
            runner = ServiceRunner(
                reg,
                service,
                types,
                db,
                self.bus,
                settings=self.settings.runner,
                metrics=self.metrics,
                on_committed=relay.committed,
            )
            self.services.append(RunningService(service, runner, relay, DeadlineTimers(runner), db))
            runner.codec.keyring = keyring
            if self.tracing is not None:
                system = messaging_system(self.bus)
                runner.tracing = self.tracing.for_service(name, runner.topic, system)
            runner.owner = await claim(db, self.bus, name, runner.group, runner.topic)
        if self.settings.metrics_port is not None:
            self._serve_metrics(self.settings.metrics_address, self.settings.metrics_port)

    def _serve_metrics(self, host: str, port: int) -> None:
        # Imported here: without metrics, prometheus_client is never loaded.
        from saga_registry.engine import prometheus

        try:
            server = prometheus.serve([(s.runner, s.db) for s in self.services], host, port)
        except OSError as exc:
            why = exc.strerror or exc
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {why}") from None
        self.metrics_server = server
        self.metrics.observer = server.observer
        log.info("metrics on http://%s:%d/metrics", host, server.port)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every part until `stop` is set; one part failing stops all of them.

        On stop the consumers finish the batch in hand and the timers their pass; only then
        do the relays drain, so that what those last transactions committed is published
        before the process exits."""
        drain = asyncio.Event()
        workers, relays = [], []
        started: list[RunningService] = []
        for s in self.services:
            name = s.runner.name
            workers += [
                asyncio.create_task(s.runner.run(stop), name=f"{name}.runner"),
                asyncio.create_task(s.timers.run(stop), name=f"{name}.timers"),
            ]
            relays.append(asyncio.create_task(s.relay.run(drain), name=f"{name}.relay"))
        assert self.bus is not None
        runners = [s.runner for s in self.services]
        workers += retention.prune_tasks(runners, self.bus, self.settings.retention, stop)
        try:
            for s in self.services:
                await _start_hook(s)
                started.append(s)
            # Until every consumer and timer has ended (after `stop`), any part failing
            # ends the run; the relays end only once drained, after them.
            remaining = {*workers, *relays}
            while any(not w.done() for w in workers):
                done, remaining = await asyncio.wait(remaining, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
        except asyncio.CancelledError:
            # Told to stop at once: the work in hand is abandoned, uncommitted (it is
            # delivered again), and no hook or drain may hold the process.
            stop.set()
            for task in (*workers, *relays):
                task.cancel()
            await asyncio.gather(*workers, *relays, return_exceptions=True)
            raise
        except BaseException:
            await _finish(stop, workers, relays, started, drain)
            raise
        await _finish(stop, workers, relays, started, drain)

    async def stop(self) -> None:
        """Close databases and the bus, and the metrics endpoint; idempotent."""
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        for s in self.services:
            if isinstance(s.service, ServiceBase):
                s.service.bind_runtime(None)
            with contextlib.suppress(Exception):  # said; published again after a restart
                await s.relay.flush()
            await s.db.stop()
        self.services.clear()
        if self.bus is not None:
            await self.bus.stop()
        if self.tracing is not None:
            # What is queued goes out now; the SDK shuts the exporters down at exit.
            self.tracing.flush()


def _keyring(registry: Registry, names: Sequence[str]) -> Keyring:
    """The keys of the environment, which must hold one for each service in `names` (to
    sign) and for each producer of an event they react to (to verify)."""
    keyring = Keyring.from_environment()
    needed = set(names) | {
        registry.event(r.event).producer for n in names for r in registry.service(n).reactions
    }
    missing = sorted(needed - keyring.services())
    if missing:
        raise ConfigError(
            f"registry {registry.path} wants signed events, but SAGA_KEYS_FILE / SAGA_KEYS "
            f"has no key for {', '.join(missing)}"
        )
    return keyring


async def _finish(
    stop: asyncio.Event,
    workers: list[asyncio.Task[None]],
    relays: list[asyncio.Task[None]],
    started: list[RunningService],
    drain: asyncio.Event,
) -> None:
    """Stop the consumers and timers, then the services' own work, then drain the relays."""
    stop.set()
    await asyncio.gather(*workers, return_exceptions=True)
    # Before the drain: what a service's background work answers while it stops is
    # still published.
    for s in reversed(started):
        await _stop_hook(s)
    drain.set()
    await asyncio.gather(*relays, return_exceptions=True)


# A class written by hand, not on a generated base, may not be a ServiceBase: no hooks.


async def _start_hook(s: RunningService) -> None:
    if not isinstance(s.service, ServiceBase):
        return
    try:
        await s.service.start()
    except Exception as exc:  # user code: one line, and the run stops
        raise ConfigError(
            f"service {s.runner.name} failed to start: {type(exc).__name__}: {one_line(exc)}"
        ) from exc


async def _stop_hook(s: RunningService) -> None:
    if not isinstance(s.service, ServiceBase):
        return
    try:
        await s.service.stop()
    except Exception as exc:  # the other services must still stop and drain
        log.warning(
            "%s: stop hook failed: %s: %s", s.runner.name, type(exc).__name__, one_line(exc)
        )
