"""OpenTelemetry tracing, opt-in: one saga is one trace.

Everything that touches OpenTelemetry is here. The runner, the batch path, answers and
deadline timers hold a `ServiceTracer` or None; with None (tracing off) they pay one `is
None` check per delivery, and `opentelemetry` is never imported: `from_environment`
decides from the environment alone, and imports the SDK only when tracing is on.

The trace context travels with the events as the CloudEvents Distributed Tracing
extension (`traceparent`, `tracestate`; the `ce_traceparent` / `ce_tracestate` headers in
the binary mode). A delivery a service takes in gets a CONSUMER span whose parent is the
event's `traceparent`, and the event its reaction emits carries that span's context. An
event emitted outside a reaction (`initiate`, `answer`, a deadline) gets a PRODUCER span.
A deadline's event and a deferred answer stay in the saga's trace: the span that moved the
saga into its state is stored beside the state (`saga_state.traceparent`).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from saga_registry.engine.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from saga_registry.engine.bus import Bus, Delivery
    from saga_registry.engine.envelope import Envelope

EXPORTERS = ("otlp", "console")
"""The values of `OTEL_TRACES_EXPORTER` this engine understands (besides `none`)."""

_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")

FLUSH_S = 2.0
"""How long stopping waits for the queued spans to be exported: the flush blocks the
event loop, and a collector that does not answer must not hold a stopping service."""

Carrier = tuple[str, str]
"""A trace context as the events carry it: (traceparent, tracestate); empty: none."""

NO_CONTEXT: Carrier = ("", "")


def exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the standard `OTEL_*` variables in `environ` ask for; empty when
    tracing is off. Raises `ConfigError` (one line) for an exporter or protocol this
    engine does not ship. Reads the environment only: imports nothing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names and any(environ.get(v, "").strip() for v in _OTLP_ENDPOINTS):
        names = ["otlp"]  # no exporter named: an OTLP endpoint alone turns tracing on
    if not names or "none" in names:
        return ()
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']}: unknown exporter "
            f"{unknown[0]!r}; this engine ships {', '.join(EXPORTERS)} (or none)"
        )
    if "otlp" in names:
        for variable in _PROTOCOLS:
            protocol = environ.get(variable, "").strip()
            if protocol:
                if protocol != "http/protobuf":
                    raise ConfigError(
                        f"{variable}={protocol}: only http/protobuf is supported for traces"
                    )
                break  # the traces-specific variable wins over the general one
    return tuple(dict.fromkeys(names))


def from_environment(services: Sequence[str]) -> Tracing | None:
    """The process's tracing as the `OTEL_*` variables ask, or None when off (nothing
    imported then). `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
    names the process, else the `services` it runs. Raises `ConfigError` for an unknown
    exporter, or when the OpenTelemetry packages are not installed."""
    wanted = exporters(os.environ)
    if not wanted:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError as exc:
        raise ConfigError(
            f"tracing is on (OTEL_* variables) but OpenTelemetry is not installed ({exc.name}): "
            "pip install 'saga-registry[otel]'"
        ) from None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": ",".join(services) or "saga"}))
    # Shut down at exit by `_shutdown`, bounded, not by the SDK's own exit hook.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    atexit.register(_shutdown, provider)
    for name in wanted:
        exporter: SpanExporter
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            # One JSON object per line: the SDK's default spreads a span over many lines.
            exporter = ConsoleSpanExporter(out=sys.stdout, formatter=_one_line)
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise ConfigError(
                    "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'saga-registry[otel]'"
                ) from None
            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_* variables
        # Batched, on the SDK's thread: the hot path only queues the ended span.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    # Made global when nothing else was, so that spans a reaction makes itself (an HTTP
    # client's instrumentation) go to the same place, as children of the delivery's span.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    return Tracing(provider)


def _shutdown(provider: TracerProvider) -> None:
    """Export what is left and stop the exporters, for at most `FLUSH_S`."""
    _bounded(provider.shutdown, FLUSH_S)


def _bounded(work: Callable[[], object], timeout_s: float) -> None:
    """Run `work` for at most `timeout_s`, on a daemon thread left behind if it takes
    longer. The SDK's flush and shutdown export in the calling thread and wait out the
    exporter's timeout (10 s by default) for a collector that does not answer; a
    stopping service must not, nor block its event loop that long."""
    worker = threading.Thread(target=work, name="saga-otel-flush", daemon=True)
    worker.start()
    worker.join(timeout_s)


def _one_line(span: Any) -> str:
    return str(span.to_json(indent=None)) + "\n"


def messaging_system(bus: Bus) -> str:
    """`messaging.system` of `bus`: kafka, or embedded (the SQLite log)."""
    from saga_registry.engine.buses import KafkaBus

    return "kafka" if isinstance(bus, KafkaBus) else "embedded"


class Tracing:
    """A process's tracing: its tracer provider, and a `ServiceTracer` per service."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    def for_service(self, service: str, topic: str, system: str) -> ServiceTracer:
        """The tracer of service `service` consuming and producing on `topic` of a bus of
        kind `system` (`messaging_system`)."""
        return ServiceTracer(self.provider.get_tracer("saga_registry"), service, topic, system)

    def flush(self, timeout_s: float = FLUSH_S) -> None:
        """Export the spans ended so far, waiting at most `timeout_s` (the SDK exports in
        the background, in batches; at the process's exit what is left is exported,
        within `FLUSH_S` too)."""
        _bounded(self.provider.force_flush, timeout_s)


class ServiceTracer:
    """The spans of one service."""

    def __init__(self, tracer: Tracer, service: str, topic: str, system: str) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        from opentelemetry.trace.status import StatusCode

        self._tracer = tracer
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self._error = StatusCode.ERROR
        self.service = service
        self._attributes = {
            "saga.service": service,
            "messaging.system": system,
            "messaging.destination.name": topic,
        }

    def consume(self, delivery: Delivery, env: Envelope | None) -> DeliverySpan:
        """A CONSUMER span for `delivery`, started now, child of the trace context its
        event carries (`env`, or the raw header when the record could not be read)."""
        if env is not None:
            carrier: Carrier = (env.traceparent, env.tracestate)
            kind = env.type
        else:
            raw = delivery.record.header("ce_traceparent") or b""
            carrier = (raw.decode("utf-8", "replace"), "")
            kind = (delivery.record.header("ce_type") or b"?").decode("utf-8", "replace")
        attributes: dict[str, str | int] = {
            **self._attributes,
            "saga.event_type": kind,
            "messaging.operation.type": "process",
            "messaging.kafka.offset": delivery.offset,
            "messaging.destination.partition.id": str(delivery.partition),
        }
        if env is not None:
            attributes["saga.id"] = env.saga_id
            attributes["messaging.message.id"] = env.id
            if env.causation_id:
                attributes["saga.causation_id"] = env.causation_id
        span = self._tracer.start_span(
            f"process {kind}",
            context=self._parent(carrier),
            kind=self._trace.SpanKind.CONSUMER,
            attributes=attributes,
        )
        return DeliverySpan(self, span)

    def consume_all(self, items: Sequence[tuple[Delivery, Envelope, Any]]) -> list[DeliverySpan]:
        """A CONSUMER span for each decoded delivery of a batch (see `consume`)."""
        return [self.consume(delivery, env) for delivery, env, _ in items]

    def produce(
        self, event_type: str, saga_id: str, emitted_by: str, stored: Carrier | None = None
    ) -> SendSpan:
        """A PRODUCER span for an event emitted outside a reaction (`emitted_by`: initiate,
        answer, deadline), started now.

        Its parent is the saga's `stored` context when given (a deadline, a deferred
        answer: they stay in the saga's trace; the caller's current span, if any, is then
        linked); else the caller's current span (a web request's), else none: a new
        trace."""
        current = self._trace.get_current_span().get_span_context()
        parent: Context | None = None
        links = []
        if stored is not None and stored[0]:
            parent = self._parent(stored)
            if current.is_valid:
                links.append(self._trace.Link(current))
        attributes: dict[str, str] = {
            **self._attributes,
            "saga.id": saga_id,
            "saga.event_type": event_type,
            "saga.emitted_by": emitted_by,
            "messaging.operation.type": "send",
        }
        span = self._tracer.start_span(
            f"send {event_type}",
            context=parent,  # None: the current context
            kind=self._trace.SpanKind.PRODUCER,
            attributes=attributes,
            links=links,
        )
        return SendSpan(self, span)

    def carrier(self, span: Span) -> Carrier:
        """`span`'s context as the events carry it."""
        out: dict[str, str] = {}
        self._propagator.inject(out, context=self._trace.set_span_in_context(span))
        return out.get("traceparent", ""), out.get("tracestate", "")

    def _parent(self, carrier: Carrier) -> Context:
        traceparent, tracestate = carrier
        if not traceparent:
            # No context in the event: a new trace, whatever the caller's context is.
            return self._context.Context()
        headers = {"traceparent": traceparent}
        if tracestate:
            headers["tracestate"] = tracestate
        # An invalid traceparent extracts to an empty context: a new trace.
        return self._propagator.extract(headers, context=self._context.Context())


class _Span:
    def __init__(self, tracer: ServiceTracer, span: Span) -> None:
        self._tracer = tracer
        self.span = span
        self._carrier: Carrier | None = None

    @property
    def carrier(self) -> Carrier:
        """This span's context, for the events it leads to."""
        if self._carrier is None:
            self._carrier = self._tracer.carrier(self.span)
        return self._carrier

    def current(self) -> AbstractContextManager[Any]:
        """Make this span the current one in the block (spans made there are its
        children); it is not ended on leaving."""
        # A failed attempt is recorded by the runner (retried, dead_lettered), not here:
        # an attempt that fails and is retried must not leave the span in error.
        from opentelemetry.trace import use_span

        return use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def _error(self, name: str, exc: BaseException, attributes: dict[str, Any]) -> None:
        self.span.add_event(
            name,
            {
                "exception.type": type(exc).__name__,
                "exception.message": " ".join(str(exc).split())[:500],
                **attributes,
            },
        )


_OUTCOMES = {"dead": "dead_lettered"}
"""The runner's outcome names that differ from the span's."""


class DeliverySpan(_Span):
    """The span of one delivery a service takes in, from consume to the hand-over of what
    it emitted to the relay. Ended once, by `end`; a span never ended (its batch rolled
    back, the delivery done again one by one) is never exported."""

    def moved(self, before: str | None, after: str | None) -> None:
        """Record the saga's state before the delivery and, if it moved, after."""
        if before is not None:
            self.span.set_attribute("saga.state.before", before)
        if after is not None:
            self.span.set_attribute("saga.state.after", after)

    def retried(self, exc: BaseException, attempt: int) -> None:
        """Attempt `attempt` failed with `exc` and will be retried."""
        self._error("retry", exc, {"saga.attempt": attempt})

    def dead_lettered(self, exc: BaseException, attempts: int) -> None:
        """The delivery went to the dead-letter topic because of `exc`: status ERROR."""
        self._error("dead_lettered", exc, {"saga.attempts": attempts})
        self.span.set_status(self._tracer._error, f"{type(exc).__name__}: {exc}"[:500])

    def parked(self, exc: BaseException) -> None:
        """The saga was parked here because of `exc`."""
        self._error("parked", exc, {})

    def end(self, outcome: str) -> None:
        """End the span with its `saga.outcome` (applied, duplicate, skipped,
        dead_lettered)."""
        self.span.set_attribute("saga.outcome", _OUTCOMES.get(outcome, outcome))
        self.span.end()


class SendSpan(_Span):
    """The span of an event emitted outside a reaction; ended by `sent` or `failed`."""

    def sent(self, env: Envelope) -> None:
        """`env` is in the outbox, committed, and handed to the relay."""
        self.span.set_attribute("messaging.message.id", env.id)
        self.span.end()

    def failed(self, exc: BaseException) -> None:
        """Nothing was queued: `exc` was raised (a refused answer, a failed effect)."""
        self._error("exception", exc, {})
        self.span.set_status(self._tracer._error, f"{type(exc).__name__}: {exc}"[:500])
        self.span.end()
