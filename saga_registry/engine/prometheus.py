"""Prometheus metrics of the services a process runs (`saga run --metrics-port`).

Counters and histograms are fed as things happen (`PrometheusObserver`, the runners'
`Metrics.observer`). What is a state rather than an event (sagas by state, parked sagas,
the outbox backlog, consumer lag) is read when Prometheus scrapes, not sampled on a timer:
a process nobody scrapes pays nothing for it. The scrape runs in the HTTP server's
thread; it asks the event loop for those figures and waits for them (each service's
database and subscription belong to the loop).

Only imported when metrics are served: `prometheus_client` is not loaded otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine.database import Database
from saga_registry.engine.metrics import OUTCOMES
from saga_registry.engine.runner import ServiceRunner

log = logging.getLogger("saga.metrics")

# From a millisecond to a minute: a reaction is a few ms; an event's age at arrival runs
# from ms (a live pipeline) to minutes (a backlog after an outage).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SCRAPE_WAIT_S = 10.0


class PrometheusObserver:
    """The runners' reports as Prometheus counters and histograms (`Metrics.Observer`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "saga_deliveries",
            "Deliveries handled, by event type and outcome (applied, skipped, passed,"
            " dead_lettered) and the reason for a skip or a pass.",
            ["service", "event_type", "outcome", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "saga_retries",
            "Reactions run again after they raised.",
            ["service", "event_type"],
            registry=registry,
        )
        self.other = Counter(
            "saga_runtime_events",
            "Other things a service did: consumer_errors (an outage, resubscribed),"
            " deadlines_fired.",
            ["service", "what"],
            registry=registry,
        )
        self.reaction_seconds = Histogram(
            "saga_reaction_seconds",
            "Time a reaction ran (inside its transaction).",
            ["service", "event_type"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.arrival_seconds = Histogram(
            "saga_event_age_seconds",
            "An event's age (now minus its ce_time) when the transaction that took it in"
            " committed: end-to-end latency of one hop.",
            ["service", "event_type"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def count(self, name: str, service: str, event_type: str, n: int) -> None:
        """See `Observer.count`."""
        if name in OUTCOMES:
            outcome, reason = OUTCOMES[name]
            self.deliveries.labels(service, event_type, outcome, reason).inc(n)
        elif name == "retried":
            self.retries.labels(service, event_type).inc(n)
        else:
            self.other.labels(service, name).inc(n)

    def reaction(self, service: str, event_type: str, seconds: float) -> None:
        """See `Observer.reaction`."""
        self.reaction_seconds.labels(service, event_type).observe(seconds)

    def arrival(self, service: str, event_type: str, seconds: float) -> None:
        """See `Observer.arrival`."""
        self.arrival_seconds.labels(service, event_type).observe(seconds)


@dataclass(frozen=True)
class _Served:
    runner: ServiceRunner
    db: Database


class StateCollector(Collector):
    """Sagas by state, parked sagas, outbox backlog and consumer lag, read at scrape time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, served: Sequence[_Served]) -> None:
        self._loop = loop
        self._served = served

    def collect(self) -> Iterable[Metric]:
        """Called by `prometheus_client` in the scraping thread."""
        future = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
        try:
            return future.result(_SCRAPE_WAIT_S)
        except Exception as exc:  # a scrape must answer, even while a database is away
            future.cancel()
            log.warning("metrics: could not read the services' state: %s", exc)
            return []

    async def _read(self) -> list[Metric]:
        states = GaugeMetricFamily(
            "saga_sagas",
            "Sagas by the state this service holds them in.",
            labels=["service", "state"],
        )
        parked = GaugeMetricFamily(
            "saga_parked_sagas", "Sagas parked after a dead letter.", labels=["service"]
        )
        backlog = GaugeMetricFamily(
            "saga_outbox_backlog", "Outbox rows not published yet.", labels=["service"]
        )
        lag = GaugeMetricFamily(
            "saga_consumer_lag",
            "Records in the log past the last one handed to the service.",
            labels=["service", "topic", "partition"],
        )
        for s in self._served:
            name = s.runner.name
            async with s.db.transaction() as conn:
                by_state = await conn.exec_driver_sql(
                    "SELECT state, COUNT(*) FROM saga_state GROUP BY state"
                )
                for state, count in cast(list[tuple[str, int]], by_state.all()):
                    states.add_metric([name, state], count)
                parked.add_metric([name], await _scalar(conn, "SELECT COUNT(*) FROM saga_parked"))
                backlog.add_metric(
                    [name],
                    await _scalar(conn, "SELECT COUNT(*) FROM saga_outbox WHERE sent_at IS NULL"),
                )
            subscription = s.runner.subscription
            if subscription is not None:
                for (topic, partition), behind in sorted((await subscription.lag()).items()):
                    lag.add_metric([name, topic, str(partition)], behind)
        return [states, parked, backlog, lag]


async def _scalar(conn: AsyncConnection, sql: str) -> int:
    return int((await conn.exec_driver_sql(sql)).scalar() or 0)


@dataclass
class MetricsServer:
    """The `/metrics` endpoint of a process's services."""

    observer: PrometheusObserver
    """To attach to the runners' `Metrics`."""
    port: int
    _server: WSGIServer

    def stop(self) -> None:
        """Stop answering; idempotent."""
        self._server.shutdown()
        self._server.server_close()


def serve(runners: Sequence[tuple[ServiceRunner, Database]], host: str, port: int) -> MetricsServer:
    """Serve `/metrics` for `runners` on `host:port` (port 0: any free one) from a thread
    of its own. Raises `OSError` if the address cannot be bound."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    registry.register(
        StateCollector(asyncio.get_running_loop(), [_Served(r, db) for r, db in runners])
    )
    server, _ = start_http_server(port, host, registry)
    return MetricsServer(observer, int(server.server_port), server)
