"""Run services: build each one's database, runner, outbox relay and deadline timers on a
shared bus, run them until told to stop, and stop them cleanly."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses import KafkaOptions, bus_from_url
from saga_registry.engine.config import Settings
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.errors import ConfigError
from saga_registry.engine.handlers import event_types, load_service
from saga_registry.engine.metrics import Metrics
from saga_registry.engine.relay import OutboxRelay
from saga_registry.engine.runner import ServiceRunner
from saga_registry.engine.timers import DeadlineTimers
from saga_registry.registry import CodegenError, load_registry
from saga_registry.registry.model import Registry

log = logging.getLogger("saga.app")


@dataclass
class RunningService:
    """One service's parts."""

    runner: ServiceRunner
    relay: OutboxRelay
    timers: DeadlineTimers
    db: Database


class Application:
    """The services named in `settings` (all of the registry's if none), on one bus."""

    def __init__(
        self, settings: Settings, registry: Registry | None = None, bus: Bus | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.metrics = Metrics()
        self.services: list[RunningService] = []

    async def start(self) -> None:
        """Load, check and connect everything; raises an `EngineError` on a user mistake."""
        if self.registry is None:
            try:
                self.registry = load_registry(self.settings.registry)
            except CodegenError as exc:
                first = str(exc).splitlines()[0]
                raise ConfigError(f"registry {self.settings.registry}: {first}") from None
        reg = self.registry
        names = self.settings.services or tuple(s.name for s in reg.services)
        types = event_types(self.settings.package)
        options = dict(self.settings.options)
        instances = [load_service(reg, n, self.settings.package, options) for n in names]
        if self.bus is None:
            k = self.settings.kafka
            self.bus = bus_from_url(
                self.settings.bus,
                kafka_options=KafkaOptions(
                    security_protocol=k.protocol,
                    sasl_mechanism=k.sasl_mechanism,
                    sasl_username=k.sasl_username,
                    sasl_password=k.sasl_password,
                    ssl_cafile=k.ssl_cafile,
                ),
            )
        await self.bus.start()
        await self.bus.ensure_topics(
            [
                TopicSpec(reg.events_topic.name, reg.events_topic.partitions),
                TopicSpec(reg.dead_letter_topic.name, reg.dead_letter_topic.partitions),
            ]
        )
        for service in instances:
            name = service.service_name
            db = Database(database_url(self.settings.db, name), getattr(service, "metadata", None))
            await db.start()
            relay = OutboxRelay(db, self.bus)
            runner = ServiceRunner(
                reg,
                service,
                types,
                db,
                self.bus,
                settings=self.settings.runner,
                metrics=self.metrics,
                on_committed=relay.wake,
            )
            self.services.append(RunningService(runner, relay, DeadlineTimers(runner), db))

    async def run(self, stop: asyncio.Event) -> None:
        """Run every part until `stop` is set; one part failing stops all of them.

        On stop the consumers finish the batch in hand and the timers their pass; only then
        do the relays drain, so that what those last transactions committed is published
        before the process exits."""
        drain = asyncio.Event()
        workers, relays = [], []
        for s in self.services:
            name = s.runner.name
            workers += [
                asyncio.create_task(s.runner.run(stop), name=f"{name}.runner"),
                asyncio.create_task(s.timers.run(stop), name=f"{name}.timers"),
            ]
            relays.append(asyncio.create_task(s.relay.run(drain), name=f"{name}.relay"))
        try:
            # Until every consumer and timer has ended (after `stop`), any part failing
            # ends the run; the relays end only once drained, after them.
            remaining = {*workers, *relays}
            while any(not w.done() for w in workers):
                done, remaining = await asyncio.wait(remaining, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
            drain.set()
            await asyncio.gather(*relays, return_exceptions=True)

    async def stop(self) -> None:
        """Close databases and the bus; idempotent."""
        for s in self.services:
            await s.db.stop()
        self.services.clear()
        if self.bus is not None:
            await self.bus.stop()
