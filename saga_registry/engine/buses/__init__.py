"""The two buses behind `saga_registry.engine.bus.Bus`, and `bus_from_url` to pick one."""

from saga_registry.engine.buses.embedded import EmbeddedBus
from saga_registry.engine.buses.kafka import KafkaBus
from saga_registry.engine.buses.url import KafkaOptions, bus_from_url

__all__ = ["EmbeddedBus", "KafkaBus", "KafkaOptions", "bus_from_url"]
