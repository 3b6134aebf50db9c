"""Reading the dead-letter topic for the commands that only look (`saga trace`, `saga
compat`, `saga ui`): whatever the bus says, they go on with what the databases hold."""

from __future__ import annotations

import logging

from saga_registry.engine.bus import Delivery
from saga_registry.engine.buses import EmbeddedBus, KafkaOptions, bus_from_url
from saga_registry.engine.errors import EngineError
from saga_registry.registry.model import Registry


async def read_dead_letters(
    registry: Registry, url: str, kafka: KafkaOptions | None = None
) -> tuple[list[Delivery], str]:
    """Every record of `registry`'s dead-letter topic on the bus at `url`; or none and why
    the topic could not be read (no embedded log there, or the bus not answering). Raises
    `EngineError` only for a bus URL that names no bus."""
    bus = bus_from_url(url, kafka_options=kafka)
    if isinstance(bus, EmbeddedBus) and not bus.path.is_file():
        return [], f"dead-letter topic not read: no embedded log at {bus.path}"
    # A broker away is the note below, not a screen of client retries.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        async with bus as live:
            return await live.read_all(registry.dead_letter_topic.name), ""
    except EngineError as exc:
        return [], f"dead-letter topic not read: {exc}"
