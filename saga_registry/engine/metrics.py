"""Counters of what a runner did. Plain in-process numbers: exporters (Prometheus,
OpenTelemetry) can read them as a layer beside the core."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Metrics:
    """Counts by (name, service)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def inc(self, name: str, service: str, n: int = 1) -> None:
        """Add `n` to counter `name` of `service`."""
        self.counts[(name, service)] += n

    def get(self, name: str, service: str | None = None) -> int:
        """The value of `name` for one service, or summed over all."""
        if service is not None:
            return self.counts[(name, service)]
        return sum(v for (n, _), v in self.counts.items() if n == name)
