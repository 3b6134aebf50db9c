"""`saga start EVENT --data JSON`: begin a saga through the service that initiates it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from typing import Any

import click
import pydantic
from sqlalchemy import select

from saga_registry.cli.options import (
    bus_option,
    db_option,
    fail,
    kafka_security,
    package_option,
    registry_option,
    registry_or_fail,
)
from saga_registry.engine import tables
from saga_registry.engine.app import Application
from saga_registry.engine.buses.url import KafkaOptions
from saga_registry.engine.config import Settings
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import ConfigError, EngineError
from saga_registry.engine.handlers import event_types
from saga_registry.registry.model import Registry
from saga_registry.registry.names import did_you_mean


@click.command()
@click.argument("event_type", metavar="EVENT")
@click.option("--data", "data_text", required=True, metavar="JSON", help="The event's payload.")
@click.option("--saga-id", help="The saga key (default: the payload's, else a new one).")
@registry_option
@bus_option
@db_option
@package_option
@kafka_security
def start(
    event_type: str,
    data_text: str,
    saga_id: str | None,
    registry: str,
    bus: str,
    db: str,
    package: str,
    kafka: KafkaOptions,
) -> None:
    """Begin a saga with EVENT, through the service that initiates it, and print its id.

    The payload's saga key may be left out: it is then --saga-id, or a new random id. The
    event is validated with the project's generated class (handlers.events) and published
    before the command exits (a running copy of the service would publish it too)."""
    reg = registry_or_fail(registry)
    initiators = {e: s.name for s in reg.services for e in s.initiates}
    if event_type not in initiators:
        fail(
            f"{event_type}{did_you_mean(event_type, initiators)} does not start a saga in "
            f"{registry}: the events that can are {', '.join(sorted(initiators)) or 'none'}"
        )
    try:
        data = json.loads(data_text)
    except json.JSONDecodeError as exc:
        fail(f"--data is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    if not isinstance(data, dict):
        fail(f"--data must be a JSON object, the payload of {event_type}")
    key_field = next(f for f in reg.event(event_type).fields if f.name == reg.key)
    if saga_id is not None:
        if reg.key in data and str(data[reg.key]) != saga_id:
            fail(f"--saga-id {saga_id!r} differs from the payload's {reg.key} {data[reg.key]!r}")
        data[reg.key] = _key_value(saga_id, key_field.type, reg.key)
    elif reg.key not in data:
        fresh = uuid.uuid4()
        data[reg.key] = fresh.int >> 65 if key_field.type == "integer" else fresh.hex
    sys.path.insert(0, os.getcwd())  # the project's generated code, as `saga run` finds it
    try:
        cls = event_types(package)[event_type]
        event = cls.from_dict(data)
    except EngineError as exc:
        fail(str(exc))
    except KeyError:
        fail(f"{package}.events has no {event_type}: run `saga codegen`")
    except pydantic.ValidationError as exc:
        fail(f"invalid {event_type} payload: {_problems(exc)}")
    settings = Settings(
        registry=registry,
        bus=bus,
        db=db,
        services=(initiators[event_type],),
        package=package,
        kafka=kafka,
    )
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_initiate(settings, reg, event))
    except EngineError as exc:
        fail(str(exc))
    click.echo(event.saga_id())


def _problems(exc: pydantic.ValidationError) -> str:
    """Every field the payload misses or gets wrong, in one line: the fields with the same
    complaint together (`email, plan: Field required; amount: ...`), in the model's order."""
    by_message: dict[str, list[str]] = {}
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "payload"
        fields = by_message.setdefault(error["msg"], [])
        if where not in fields:
            fields.append(where)
    return "; ".join(f"{', '.join(fields)}: {msg}" for msg, fields in by_message.items())


def _key_value(text: str, kind: str, key: str) -> str | int:
    if kind != "integer":
        return text
    if not text.lstrip("-").isdigit():
        fail(f"--saga-id {text!r}: the saga key {key} is an integer")
    return int(text)


async def _initiate(settings: Settings, reg: Registry, event: Any) -> Envelope:
    app = Application(settings, registry=reg)
    try:
        await app.start()
        part = app.services[0]
        saga_id = str(event.saga_id())
        async with part.db.transaction() as conn:
            state = await conn.scalar(
                select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == saga_id)
            )
            queued = await conn.scalar(
                select(tables.outbox.c.id).where(tables.outbox.c.key == saga_id.encode()).limit(1)
            )
        if state is not None or queued is not None:
            # Its services would skip a second start; better said now than found later.
            where = f"in state {state}" if state is not None else "just started"
            raise ConfigError(f"saga {saga_id} exists already ({where}): a saga starts once")
        env = await part.runner.initiate(event)
        # Publish now: the initiating service may not be running.
        while await part.relay.relay_once():
            pass
        return env
    finally:
        await app.stop()


__all__ = ["start"]
