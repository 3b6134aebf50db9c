"""Connecting aiokafka clients and saying in one line why they could not: the pieces
`KafkaBus` and its subscriptions share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.errors import BusRefused, BusUnavailable, ConfigError

# Bounds every request, so an unreachable broker is reported in seconds, not minutes.
REQUEST_TIMEOUT_MS = 10_000
_CONNECT_TIMEOUT_S = 15.0
# How long read_all and ensure_topics wait for the broker before giving up.
WAIT_S = 30.0
# What aiokafka says when the broker answers but will not have this client.
_REFUSALS = ("SaslAuthenticationFailed", "CERTIFICATE_VERIFY_FAILED", "UnsupportedSaslMechanism")
# How long closing one client may take before it is abandoned.
_STOP_S = 2.0
# Errors that mean "the broker cannot be reached or used right now".
FAILURES = (KafkaError, OSError, asyncio.TimeoutError)


async def connect(client: Any, bootstrap: str, doing: str = "reach") -> None:
    """Start an aiokafka client of the cluster at `bootstrap`, or stop it and raise a
    one-line `BusUnavailable` (`BusRefused` when the broker will not have it)."""
    with _logged_reasons() as reasons:
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await client.start()
            return
        except TimeoutError:
            reason = f"no answer within {_CONNECT_TIMEOUT_S:g} s"
        except (*FAILURES, ValueError) as exc:
            reason = reasons[-1] if reasons else describe(exc)
    await quietly_stop(client)
    if any(words in reason for words in _REFUSALS):
        raise BusRefused(f"Kafka at {bootstrap} refused this client: {one_line(reason)}")
    if "closed" in reason:
        # A broker that wants TLS or SASL closes a plain connection without a word.
        reason += " (if the broker wants TLS or SASL: --kafka-security-protocol and co.)"
    raise BusUnavailable(f"cannot {doing} Kafka at {bootstrap}: {one_line(reason)}")


def delivery_of(message: ConsumerRecord) -> Delivery:
    record = Record(
        topic=message.topic,
        key=message.key or b"",
        value=message.value or b"",
        # A header may legally carry no value; it must not make the record unreadable.
        headers=tuple(
            (name, bytes(value) if value is not None else b"") for name, value in message.headers
        ),
    )
    return Delivery(record=record, partition=message.partition, offset=message.offset)


async def quietly_stop(client: Any) -> None:
    # Stopping is cleanup: a broker that went away must not turn it into a second error,
    # nor hold the process (a producer flushing to no broker waits for ever).
    with contextlib.suppress(*FAILURES):
        async with asyncio.timeout(_STOP_S):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()


def ssl_context(cafile: str | None) -> ssl.SSLContext:
    """TLS settings trusting the CA certificates in `cafile` (PEM; the system's if None).
    Raises `ConfigError` naming the file if it cannot be read or holds no certificate."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"Kafka CA file {cafile}: no PEM CA certificate in it ({describe(exc)})"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"Kafka CA file {cafile}: cannot read it ({describe(exc)})") from exc
    return context


# While a silenced aiokafka logger is opened by `_logged_reasons`: its level then, so that
# a level someone else sets meanwhile is left in place.
_OPEN_LEVEL = logging.WARNING - 1


class _Silenced:
    """How many `_logged_reasons` are open, and the logger settings the first one saved
    (None: the logger was not silenced, nothing to restore)."""

    depth = 0
    saved: tuple[int, bool] | None = None


@contextlib.contextmanager
def _logged_reasons() -> Iterator[list[str]]:
    """What aiokafka logs at WARNING and above meanwhile.

    Its exception for a failed bootstrap only says "Unable to bootstrap from [...]"; the
    cause (connection refused, unknown host, TLS or SASL failure) is only logged. A caller
    that silenced aiokafka's logger (saga run does until its services are up, so that one
    line is all the user sees) still gets the reasons: meanwhile the logger lets WARNING
    records through to this collector but not on to the root logger's handlers.
    """
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    if _Silenced.depth == 0 and not logger.isEnabledFor(logging.WARNING):
        _Silenced.saved = (logger.level, logger.propagate)
        logger.setLevel(_OPEN_LEVEL)
        logger.propagate = False
    _Silenced.depth += 1
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        _Silenced.depth -= 1
        if _Silenced.depth == 0 and _Silenced.saved is not None:
            level, logger.propagate = _Silenced.saved
            _Silenced.saved = None
            if logger.level == _OPEN_LEVEL:
                logger.setLevel(level)


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def one_line(text: str) -> str:
    return " ".join(text.split())
