"""`saga db`: a service's database and its consumer group's position on the bus."""

from __future__ import annotations

import asyncio

import click

from saga_registry.cli.options import (
    bus_option,
    db_option,
    fail,
    kafka_security,
    registry_option,
    registry_or_fail,
)
from saga_registry.engine.buses import bus_from_url
from saga_registry.engine.buses.url import KafkaOptions
from saga_registry.engine.custody import adopt, group_name
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.errors import EngineError
from saga_registry.registry.names import unknown


@click.group("db")
def db_group() -> None:
    """A service's database and its group's position on the bus."""


@db_group.command("adopt")
@click.argument("service")
@registry_option
@bus_option
@db_option
@kafka_security
def adopt_command(service: str, registry: str, bus: str, db: str, kafka: KafkaOptions) -> None:
    """Accept SERVICE's database as its group's, on purpose, with the service stopped.

    `saga run` refuses a database that does not match the group's position on the bus
    (emptied, replaced, restored from an older copy, or another replica's). After this, the
    service starts from the group's current offsets with whatever the database holds:
    events before those offsets are not read again, so what the database forgot stays
    forgotten."""
    reg = registry_or_fail(registry)
    known = [s.name for s in reg.services]
    if service not in known:
        fail(unknown("service", service, known))

    async def go() -> str:
        b = bus_from_url(bus, kafka_options=kafka)
        database = Database(database_url(db, service))
        await database.start()
        try:
            async with b:
                return await adopt(
                    database, b, service, group_name(reg, service), reg.events_topic.name
                )
        finally:
            await database.stop()

    try:
        identity = asyncio.run(go())
    except EngineError as exc:
        fail(str(exc))
    click.echo(f"database of {service} adopted as {identity}; it starts at the group's offsets")
