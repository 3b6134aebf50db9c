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
            kind = (record.header("ce_type") or b"").decode(errors="replace")
            self.inc(outcome, service, event_type=kind)
            if debug:
                event_id = (record.header("ce_id") or b"").decode(errors="replace")
                saga = record.key.decode(errors="replace")
                log.debug(
                    "%s: %s %s of saga %s at %s/%d@%d: %s",
                    service,
                    kind or "(no type)",
                    event_id or "(no id)",
                    saga,
                    record.topic,
                    delivery.partition,
                    delivery.offset,
                    outcome,
                    extra={
                        "service": service,
                        "saga_id": saga,
                        "event_id": event_id,
                        "event_type": kind,
                        "outcome": outcome,
                        "partition": delivery.partition,
                        "offset": delivery.offset,
                    },
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
