"""What a runner did, as plain in-process counts, and the hook an exporter hangs on.

The runner reports every delivery's outcome here. The counts are always kept (tests and
the harness read them). Anything dearer (labels by event type, latency histograms) only
happens once an `Observer` is attached: with none, metrics cost a counter increment per
outcome, and no clock is read for them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from saga_registry.engine.bus import Delivery

log = logging.getLogger("saga.deliveries")

OUTCOMES = {
    "applied": ("applied", ""),
    "duplicate": ("skipped", "duplicate"),
    "skipped": ("skipped", "not_allowed"),
    "dead_lettered": ("dead_lettered", ""),
    "unneeded": ("passed", "outside_projection"),
    "passed": ("passed", "replayed_letter_of_another_service"),
}
"""What became of a delivery, as the runner reports it, in the words metrics and logs use:
(outcome, the reason for a skip or a pass)."""


def fields(service: str, delivery: Delivery) -> dict[str, object]:
    """A delivery's log fields: service, saga, event id and type, its place in the log."""
    record = delivery.record
    return {
        "service": service,
        "saga_id": record.key.decode(errors="replace"),
        "event_id": _text(record.header("ce_id")),
        "event_type": _text(record.header("ce_type")),
        "topic": record.topic,
        "partition": delivery.partition,
        "offset": delivery.offset,
    }


def where(delivery: Delivery) -> str:
    """A delivery as a log line names it: `Type id of saga S at topic/partition@offset`."""
    f = fields("", delivery)
    return (
        f"{f['event_type'] or '(no type)'} {f['event_id'] or '(no id)'} of saga {f['saga_id']}"
        f" at {f['topic']}/{f['partition']}@{f['offset']}"
    )


def _text(value: bytes | None) -> str:
    return (value or b"").decode(errors="replace")


class Observer(Protocol):
    """An exporter of what the runners report (`saga_registry.engine.prometheus`)."""

    def count(self, name: str, service: str, event_type: str, n: int) -> None:
        """`n` more of `name` (an outcome such as applied, duplicate, skipped,
        dead_lettered, unneeded, passed; or retried, consumer_errors, deadlines_fired)
        for `service`; `event_type` is "" when it has none."""

    def reaction(self, service: str, event_type: str, seconds: float) -> None:
        """A reaction of `service` to `event_type` ran for `seconds`."""

    def arrival(self, service: str, event_type: str, seconds: float) -> None:
        """An event reached `service`'s transaction `seconds` after it was created."""


@dataclass
class Metrics:
    """Counts by (name, service), and the observer, if any, that sees each report."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    observer: Observer | None = None

    @property
    def timed(self) -> bool:
        """Whether anyone wants reaction and arrival times (worth reading the clock for)."""
        return self.observer is not None

    def inc(self, name: str, service: str, n: int = 1, event_type: str = "") -> None:
        """Add `n` to counter `name` of `service` (for `event_type`, if it has one)."""
        self.counts[(name, service)] += n
        if self.observer is not None:
            self.observer.count(name, service, event_type, n)

    def delivered(self, service: str, outcomes: Iterable[tuple[Delivery, str]], now: float) -> None:
        """Report what became of each delivery `service` handled (committed at `now`):
        counted by outcome and event type, a line each at DEBUG on `saga.deliveries`, and
        each taken-in event's age to the observer."""
        debug = log.isEnabledFor(logging.DEBUG)
        if self.observer is None and not debug:
            # Nobody exports or logs them: the counts alone, no header read.
            for _, outcome in outcomes:
                self.counts[(outcome, service)] += 1
            return
        for delivery, outcome in outcomes:
            record = delivery.record
            kind = _text(record.header("ce_type"))
            self.inc(outcome, service, event_type=kind)
            if debug:
                said, reason = OUTCOMES.get(outcome, (outcome, ""))
                log.debug(
                    "%s: %s: %s%s",
                    service,
                    where(delivery),
                    said,
                    f" ({reason})" if reason else "",
                    extra={**fields(service, delivery), "outcome": said, "reason": reason},
                )
            if self.observer is not None and outcome == "applied":
                created = _epoch(record.header("ce_time"))
                if created is not None:
                    self.observer.arrival(service, kind, max(0.0, now - created))

    def reaction(self, service: str, event_type: str, seconds: float) -> None:
        """Report a reaction's duration (to the observer only)."""
        if self.observer is not None:
            self.observer.reaction(service, event_type, seconds)

    def get(self, name: str, service: str | None = None) -> int:
        """The value of `name` for one service, or summed over all."""
        if service is not None:
            return self.counts[(name, service)]
        return sum(v for (n, _), v in self.counts.items() if n == name)


def _epoch(stamp: bytes | None) -> float | None:
    """An RFC 3339 `ce_time` as seconds since the epoch, or None."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.decode().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
