"""The runtime's settings: one typed object, read once at the edge (CLI flags, then
environment) and passed in; nothing below the CLI reads the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from saga_registry.engine.buses.url import KafkaOptions
from saga_registry.engine.retention import RetentionSettings
from saga_registry.engine.runner import RunnerSettings

DEFAULT_BUS = "embedded:.saga/bus.db"
DEFAULT_DB = "sqlite:///.saga/{service}.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """What `saga run` runs and where."""

    registry: str = "registry/saga.yaml"
    bus: str = DEFAULT_BUS
    db: str = DEFAULT_DB
    services: tuple[str, ...] = ()
    package: str = "handlers"
    kafka: KafkaOptions = field(default_factory=KafkaOptions)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    """The dedupe window and what is kept how long (`saga_registry.engine.retention`)."""
    options: tuple[tuple[str, str], ...] = ()
    """`KEY=VALUE` settings for the services (`--set`); each service whose class has
    `configure(options)` receives them all. A key no service of the registry declares in
    its `options` is refused at start."""
    allow_stubs: bool = False
    """Run services whose reactions are still the generated stub (refused otherwise)."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (0: any free one); None: not served."""
    metrics_address: str = "127.0.0.1"
    """The address the metrics endpoint listens on."""
