"""Fixtures for parts that may be absent on a developer's machine: they skip with a
reason locally and fail in CI, where `SAGA_REQUIRE_KAFKA=1` / `SAGA_REQUIRE_DOT=1`."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from saga_registry.engine.bus import Bus
from saga_registry.engine.buses import EmbeddedBus, KafkaBus


def _required(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0", "false", "no")


def kafka_api_versions(host: str, port: int, timeout: float = 5.0) -> int:
    """Send Kafka's ApiVersions (v0) request; return the number of APIs the broker lists.

    Raises OSError if nothing answers, ValueError if what answers does not speak Kafka.
    """
    client = b"saga-tests"
    # request header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read(sock, 4))[0]
        reply = _read(sock, size)
    correlation, error, count = struct.unpack(">ihi", reply[:10])
    if correlation != 7 or error != 0:
        raise ValueError(
            f"not a Kafka ApiVersions reply (correlation {correlation}, error {error})"
        )
    return int(count)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed mid-reply")
        data += chunk
    return data


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """`host:port` of a live Kafka broker (`SAGA_KAFKA_BOOTSTRAP`, default 127.0.0.1:9092)."""
    address = os.environ.get("SAGA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    host, _, port = address.rpartition(":")
    try:
        kafka_api_versions(host, int(port))
    except (OSError, ValueError) as exc:
        reason = f"no Kafka broker answers at {address} ({exc}); start one: scripts/kafka start"
        if _required("SAGA_REQUIRE_KAFKA"):
            pytest.fail(f"SAGA_REQUIRE_KAFKA=1 but {reason}")
        pytest.skip(reason)
    return address


@pytest.fixture(scope="session")
def dot_installed() -> None:
    """Graphviz's `dot` is on PATH (skips, or fails under SAGA_REQUIRE_DOT=1)."""
    if shutil.which("dot") is None:
        if _required("SAGA_REQUIRE_DOT"):
            pytest.fail("SAGA_REQUIRE_DOT=1 but Graphviz 'dot' is not installed")
        pytest.skip("Graphviz 'dot' is not installed (apt-get install graphviz)")


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def java() -> None:
    """Java and Kafka's jars (or Maven to fetch them) for `scripts/kafka` (skips if not)."""
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: scripts/kafka needs Java 17+")
    if not (ROOT / ".kafka" / "libs" / ".complete").exists() and shutil.which("mvn") is None:
        pytest.skip("Kafka is not fetched and mvn is missing: run scripts/kafka start once")


@pytest.fixture(params=["embedded", "kafka"])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus]:
    """A started bus of each kind (a fresh embedded log; the Kafka broker), stopped after."""
    if request.param == "kafka":
        b: Bus = KafkaBus(request.getfixturevalue("kafka_bootstrap"))
    else:
        b = EmbeddedBus(tmp_path / "bus.db")
    await b.start()
    yield b
    await b.stop()


@pytest.fixture(scope="session")
def kcat() -> str:
    """The path of `kcat`, a Kafka client outside Python (skips, or fails under
    SAGA_REQUIRE_KAFKA=1: the Kafka tests include proving other clients interoperate)."""
    path = shutil.which("kcat")
    if path is None:
        if _required("SAGA_REQUIRE_KAFKA"):
            pytest.fail("SAGA_REQUIRE_KAFKA=1 but kcat is not installed (apt-get install kcat)")
        pytest.skip("kcat is not installed (apt-get install kcat)")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A service database URL template on each of SQLite and PostgreSQL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path}/{{service}}.db"


from tests.pg import pg_url  # noqa: E402, F401 - the PostgreSQL fixture, shared by the suite

# The engine's tests import the committed codegen output of tests/registries/ (`orders`,
# `trip_booking` packages), never the checkout's own `handlers`.
for _golden in sorted((Path(__file__).parent / "golden").iterdir()):
    if str(_golden) not in sys.path:
        sys.path.append(str(_golden))
