"""Dead-letter records: the original record plus why it could not be handled; their
replayed copies, which only the service whose letter it was takes in; and the marker
records that say, on the dead-letter topic itself, which letters were replayed when."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.envelope import attributes

ERROR = "saga_error"
ERROR_TYPE = "saga_error_type"
SERVICE = "saga_service"
ATTEMPTS = "saga_attempts"
ORIGIN = "saga_origin"  # topic/partition/offset of the original record
REPLAYED = "saga_replayed"
REPLAY_FOR = "saga_replay_for"  # on a replayed copy: the one service that takes it in
REPLAY_OF = "saga_replay_of"  # on a replayed copy: partition/offset of its letter
REPLAY_THEN = "saga_replay_then"  # on a replayed copy: ids of the saga's copies after it
REPLAY_MARKER = "saga_replay_marker"  # on a marker record: partition/offset of the letter
REPLAYED_AT = "saga_replayed_at"  # on a marker record: when, seconds since the epoch
_REPLAY = (REPLAYED, REPLAY_FOR, REPLAY_OF, REPLAY_THEN)
_THEN_MAX = 200  # ids named by one copy; past that, the service may put back a duplicate
_MARKS = (REPLAY_MARKER, REPLAYED_AT)  # mean something on the dead-letter topic only
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
        *((k, v) for k, v in kept if k not in _OURS and k not in _MARKS),
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


def replay_record(dead: Record, topic: str, of: str = "", then: Sequence[str] = ()) -> Record:
    """The record to put back on `topic`: the original headers, marked as a replay meant
    for the service that dead-lettered it (`passes_by`); `of` names the letter's place
    (partition/offset) for whoever reads a later letter of the copy, `then` the event ids
    of the copies of the same saga for the same service that the replay puts after it
    (`engine.parking` puts back, itself, the events held behind the saga that none
    brings)."""
    headers = tuple((k, v) for k, v in dead.headers if k not in _OURS and k not in _REPLAY)
    mark = [(REPLAYED, b"1"), (REPLAY_FOR, dead.header(SERVICE) or b"")]
    if of:
        mark.append((REPLAY_OF, of.encode()))
    if then:
        mark.append((REPLAY_THEN, ",".join(then[:_THEN_MAX]).encode()))
    return Record(topic, dead.key, dead.value, (*headers, *mark))


def following(copy: Record) -> frozenset[str]:
    """The event ids a replayed `copy` says follow it (`replay_record`'s `then`)."""
    text = (copy.header(REPLAY_THEN) or b"").decode("utf-8", "replace")
    return frozenset(i for i in text.split(",") if i)


def copy_headers(rec: Record) -> list[list[str]]:
    """`rec`'s headers as an outbox row keeps them ([name, text] pairs), without the
    replay marks (a copy gets its own): the original headers of an event that may have to
    be put back. A value that is not UTF-8 text is left out: the outbox keeps text."""
    kept = []
    for k, v in rec.headers:
        if k in _REPLAY:
            continue
        try:
            kept.append([k, v.decode("utf-8")])
        except UnicodeDecodeError:
            continue
    return kept


def passes_by(delivery: Delivery, service: str) -> bool:
    """Whether `service` must let `delivery` pass without effect (acknowledge it; neither
    apply, dead-letter nor park it): a replayed copy of another service's letter. Every
    service reads the one events topic, but a letter is one service's failure, and a copy
    reaching the others would only be dead-lettered again by those that cannot read it."""
    meant_for = delivery.record.header(REPLAY_FOR)
    return bool(meant_for) and meant_for != service.encode()


def marker_record(letter: Delivery, topic: str, at: float | None = None) -> Record:
    """The record on the dead-letter `topic` that says `letter` was replayed (at `at`, by
    default now). Its key is empty: it belongs to no saga."""
    at = time.time() if at is None else at
    place = f"{letter.partition}/{letter.offset}".encode()
    return Record(topic, b"", b"", ((REPLAY_MARKER, place), (REPLAYED_AT, f"{at:.3f}".encode())))


def is_marker(delivery: Delivery) -> bool:
    """Whether `delivery`, read from the dead-letter topic, is a replay marker (not a
    letter: a letter names its service)."""
    rec = delivery.record
    return rec.header(REPLAY_MARKER) is not None and rec.header(SERVICE) is None


def letters(deliveries: Iterable[Delivery]) -> list[DeadLetter]:
    """The letters among `deliveries` read from the dead-letter topic (markers left out)."""
    return [DeadLetter.of(d) for d in deliveries if not is_marker(d)]


def replays(deliveries: Iterable[Delivery]) -> dict[tuple[int, int], float]:
    """When each letter was last replayed, by its (partition, offset), from the markers
    among `deliveries` (a marker naming no place it could be is ignored)."""
    done: dict[tuple[int, int], float] = {}
    for d in deliveries:
        place = d.record.header(REPLAY_MARKER)
        if place is None or not is_marker(d):
            continue
        partition, _, offset = place.partition(b"/")
        key = (_count(partition.decode("latin-1")), _count(offset.decode("latin-1")))
        if min(key) < 0:
            continue
        at = _number(d.record.header(REPLAYED_AT))
        done[key] = max(done.get(key, 0.0), at)
    return done


def _unreadable(delivery: Delivery) -> str:
    """Why a record that no service dead-lettered (written to the topic directly) could not
    be read, if so."""
    return f"unreadable record: {delivery.unreadable}" if delivery.unreadable else ""


def _count(text: str) -> int:
    """A count or place read from a header: -1 unless plain ASCII digits of sane length
    (str.isdigit admits '²', which int() refuses, and int() refuses 5,000 digits)."""
    ok = text.isascii() and text.isdigit() and len(text) <= 18
    return int(text) if ok else -1


def _number(value: bytes | None) -> float:
    """A time read from a header: 0.0 unless a number a clock can show (no nan, inf or
    year 5000: formatting those raises)."""
    try:
        at = float(value or b"")
    except ValueError:
        return 0.0
    return at if 0.0 <= at < 1e11 else 0.0


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
    source: str = ""
    """The event's CloudEvents source: who wrote it."""
    replay_of: str = ""
    """For the letter of a replayed copy: the partition/offset of the letter it replayed."""

    @classmethod
    def of(cls, delivery: Delivery) -> DeadLetter:
        """Read the dead-letter headers of `delivery`; never raises, whatever they hold
        (a missing or unreadable header reads as "" or 0)."""
        rec = delivery.record

        def h(name: str) -> str:
            value = rec.header(name)
            return value.decode("utf-8", "replace") if value is not None else ""

        attempts = h(ATTEMPTS)
        event = attributes(rec)
        return cls(
            partition=delivery.partition,
            offset=delivery.offset,
            service=h(SERVICE),
            error_type=h(ERROR_TYPE),
            error=h(ERROR) or _unreadable(delivery),
            attempts=max(_count(attempts), 0),
            origin=h(ORIGIN),
            event_type=event.get("type", ""),
            event_id=event.get("id", ""),
            source=event.get("source", ""),
            saga_id=rec.key.decode("utf-8", "replace"),
            replay_of=h(REPLAY_OF),
        )
