"""The two buses behind `engine.bus.Bus`, and `bus_from_url` to pick one."""

from engine.buses.embedded import EmbeddedBus
from engine.buses.kafka import KafkaBus
from engine.buses.url import KafkaOptions, bus_from_url

__all__ = ["EmbeddedBus", "KafkaBus", "KafkaOptions", "bus_from_url"]
