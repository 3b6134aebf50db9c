"""Dead-letter records: the original record plus why it could not be handled."""

from __future__ import annotations

from dataclasses import dataclass

from saga_registry.engine.bus import Delivery, Record

ERROR = "saga_error"
ERROR_TYPE = "saga_error_type"
SERVICE = "saga_service"
ATTEMPTS = "saga_attempts"
ORIGIN = "saga_origin"  # topic/partition/offset of the original record
REPLAYED = "saga_replayed"
TRUNCATED = "saga_truncated"  # the original value's size, when only its start is kept
_OURS = (ERROR, ERROR_TYPE, SERVICE, ATTEMPTS, ORIGIN, TRUNCATED)
_KEPT_HEADERS = 64


def one_line(error: BaseException | str) -> str:
    """An error as one line: multi-line messages (pydantic's) joined with ' | '."""
    text = error if isinstance(error, str) else str(error) or type(error).__name__
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.strip().startswith("For further information")
    ]
    return " | ".join(lines)


def dead_letter(
    delivery: Delivery,
    topic: str,
    service: str,
    error: BaseException | str,
    attempts: int,
    keep_bytes: int | None = None,
) -> Record:
    """The dead-letter copy of `delivery`, with the error in its headers; with `keep_bytes`,
    only that much of a longer value is kept (header `saga_truncated` = its full size)."""
    message = one_line(error)
    kind = "Rejected" if isinstance(error, str) else type(error).__name__
    rec = delivery.record
    origin = f"{rec.topic}/{delivery.partition}/{delivery.offset}"
    kept = rec.headers
    if keep_bytes is not None:
        # An oversized record may owe its size to its headers: keep a bounded sample.
        kept = tuple((k[:256], v[:512]) for k, v in rec.headers[:_KEPT_HEADERS])
    headers = (
        *((k, v) for k, v in kept if k not in _OURS),
        (ERROR, message.encode("utf-8", "replace")[:4000]),
        (ERROR_TYPE, kind.encode()),
        (SERVICE, service.encode()),
        (ATTEMPTS, str(attempts).encode()),
        (ORIGIN, origin.encode()),
    )
    value = rec.value
    if keep_bytes is not None and len(value) > keep_bytes:
        headers = (*headers, (TRUNCATED, str(len(value)).encode()))
        value = value[:keep_bytes]
    return Record(topic, rec.key[:keep_bytes] if keep_bytes else rec.key, value, headers)


def replay_record(dead: Record, topic: str) -> Record:
    """The record to put back on `topic`: the original headers, marked as a replay."""
    headers = tuple((k, v) for k, v in dead.headers if k not in _OURS and k != REPLAYED)
    return Record(topic, dead.key, dead.value, (*headers, (REPLAYED, b"1")))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record, read for people."""

    partition: int
    offset: int
    service: str
    error_type: str
    error: str
    attempts: int
    origin: str
    event_type: str
    event_id: str
    saga_id: str

    @classmethod
    def of(cls, delivery: Delivery) -> DeadLetter:
        """Read the dead-letter headers of `delivery`."""
        rec = delivery.record

        def h(name: str) -> str:
            value = rec.header(name)
            return value.decode("utf-8", "replace") if value is not None else ""

        return cls(
            partition=delivery.partition,
            offset=delivery.offset,
            service=h(SERVICE),
            error_type=h(ERROR_TYPE),
            error=h(ERROR),
            attempts=int(h(ATTEMPTS)) if h(ATTEMPTS).isdigit() else 0,
            origin=h(ORIGIN),
            event_type=h("ce_type"),
            event_id=h("ce_id"),
            saga_id=rec.key.decode("utf-8", "replace"),
        )
