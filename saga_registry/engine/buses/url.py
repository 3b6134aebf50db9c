"""Choosing a bus from a URL: `embedded[:PATH]` or `kafka://HOST:PORT[,HOST:PORT...]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from saga_registry.engine.bus import Bus
from saga_registry.engine.buses.embedded import EmbeddedBus
from saga_registry.engine.buses.kafka import KafkaBus
from saga_registry.engine.errors import ConfigError

DEFAULT_EMBEDDED_PATH = Path(".saga/bus.db")

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """How to authenticate to Kafka; raises `ConfigError` for an unknown protocol."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    client_id: str = "saga"

    def __post_init__(self) -> None:
        if self.security_protocol not in _PROTOCOLS:
            raise ConfigError(
                f"unknown Kafka security protocol {self.security_protocol!r}:"
                f" use one of {', '.join(_PROTOCOLS)}"
            )
        if self.security_protocol.startswith("SASL_") and not self.sasl_mechanism:
            raise ConfigError(
                f"Kafka security protocol {self.security_protocol} needs a SASL mechanism"
            )


def bus_from_url(url: str, *, kafka_options: KafkaOptions | None = None) -> Bus:
    """The bus `url` names, not started yet.

    - `embedded` (file `.saga/bus.db`), `embedded:relative/path.db`, `embedded:///abs/path.db`
    - `kafka://host:port` or `kafka://host1:port1,host2:port2`

    Raises `ConfigError` for anything else.
    """
    if url == "embedded":
        return EmbeddedBus(DEFAULT_EMBEDDED_PATH)
    if url.startswith("embedded:"):
        rest = url.removeprefix("embedded:")
        if rest.startswith("//"):
            # embedded:///abs/path: an empty authority, then an absolute path.
            rest = rest.removeprefix("//")
            if not rest.startswith("/"):
                raise _unknown(url)
        if not rest:
            raise _unknown(url)
        return EmbeddedBus(Path(rest))
    if url.startswith("kafka://"):
        servers = url.removeprefix("kafka://").split(",")
        if not all(_is_host_port(s) for s in servers):
            raise _unknown(url)
        o = kafka_options or KafkaOptions()
        return KafkaBus(
            ",".join(servers),
            security_protocol=o.security_protocol,
            sasl_mechanism=o.sasl_mechanism,
            sasl_username=o.sasl_username,
            sasl_password=o.sasl_password,
            ssl_cafile=o.ssl_cafile,
            client_id=o.client_id,
        )
    raise _unknown(url)


def _is_host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return (
        bool(host)
        and not any(c in host for c in "/?#@ ")
        and port.isdigit()
        and 0 < int(port) < 65536
    )


def _unknown(url: str) -> ConfigError:
    return ConfigError(f"unknown bus URL {url!r}: use embedded[:PATH] or kafka://HOST:PORT")
