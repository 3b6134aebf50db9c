"""OpenTelemetry tracing (`saga_registry.engine.tracing`): one saga is one trace, its
context carried by the events (`traceparent`, `tracestate`), a CONSUMER span per delivery
a service takes in, a PRODUCER span per event emitted outside a reaction; off (and never
imported) unless the standard `OTEL_*` variables turn it on. Run on the checkout, whose
six services and shop make a saga of every kind, hence among the checkout's own tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import func, select

from handlers.events import DeliveryScheduled
from handlers.shop import Mix, Shop
from saga_registry.engine import tables
from saga_registry.engine.app import Application
from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.config import Settings
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import ConfigError
from saga_registry.engine.runner import RunnerSettings
from saga_registry.engine.signing import Key, Keyring
from saga_registry.engine.tracing import exporters
from saga_registry.registry import Registry, load_registry
from tests.helpers import ROOT
from tests.runtime_kit import fresh_registry
from tests.test_checkout_processes import SERVICES, on_kafka, saga_command
from tests.test_observability import free_port, scrape, series
from tests.test_saga_run import make_project, place, start, wait_terminal

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "vendor=opaque,other=1"


# The envelope


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_the_envelope_round_trips_the_trace_context_in_both_content_modes(mode: str) -> None:
    env = Envelope.new(
        type="OrderCreated",
        source="saga/t/OMS",
        saga_id="o1",
        data=b'{"order_id":"o1"}',
        traceparent=TRACEPARENT,
        tracestate=TRACESTATE,
    )
    record = env.to_record("t") if mode == "binary" else env.to_structured_record("t")
    if mode == "binary":
        assert record.header("ce_traceparent") == TRACEPARENT.encode()
        assert record.header("ce_tracestate") == TRACESTATE.encode()
    else:
        value = json.loads(record.value)
        assert (value["traceparent"], value["tracestate"]) == (TRACEPARENT, TRACESTATE)
    assert Envelope.from_record(record) == env


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_event_without_trace_context_stays_valid_and_carries_none(mode: str) -> None:
    env = Envelope.new(type="OrderCreated", source="s", saga_id="o1", data=b"{}")
    record = env.to_record("t") if mode == "binary" else env.to_structured_record("t")
    assert not any(name in ("ce_traceparent", "ce_tracestate") for name, _ in record.headers)
    assert b"traceparent" not in record.value
    read = Envelope.from_record(record)
    assert (read.traceparent, read.tracestate) == ("", "")
    assert read == env


def test_an_event_caused_by_a_traced_one_carries_its_context_unless_given_its_own() -> None:
    cause = Envelope.new(
        type="A", source="s", saga_id="o1", data=b"{}", traceparent=TRACEPARENT, tracestate="x=1"
    )
    passed_on = Envelope.new(type="B", source="s", saga_id="o1", data=b"{}", cause=cause)
    assert (passed_on.traceparent, passed_on.tracestate) == (TRACEPARENT, "x=1")
    own = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
    child = Envelope.new(
        type="B", source="s", saga_id="o1", data=b"{}", cause=cause, traceparent=own
    )
    assert (child.traceparent, child.tracestate) == (own, "")


def test_a_signed_event_verifies_whatever_trace_context_it_carries() -> None:
    keyring = Keyring({"OMS": [Key("k1", b"0123456789abcdef0123")]})
    env = Envelope.new(
        type="OrderCreated", source="s", saga_id="o1", data=b"{}", traceparent=TRACEPARENT
    )
    signed = keyring.sign("OMS", env.to_record("t"))
    keyring.verify("OMS", signed)
    # A hop (or a proxy) that rewrites the trace context leaves the signature valid.
    other = "00-4bf92f3577b34da6a3ce929d0e0e4736-2222222222222222-01"
    headers = tuple((k, other.encode() if k == "ce_traceparent" else v) for k, v in signed.headers)
    keyring.verify("OMS", Record(signed.topic, signed.key, signed.value, headers))


def _tracer() -> tuple[Any, InMemorySpanExporter]:
    from saga_registry.engine.tracing import Tracing

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Tracing(provider).for_service("Payment", "t", "embedded"), spans


def test_a_delivery_span_continues_the_events_context_and_passes_its_tracestate_on() -> None:
    tracer, spans = _tracer()
    env = Envelope.new(
        type="X", source="s", saga_id="o1", data=b"{}", traceparent=TRACEPARENT, tracestate="a=1"
    )
    span = tracer.consume(Delivery(env.to_record("t"), 2, 7), env)
    traceparent, tracestate = span.carrier
    span.end("applied")
    (done,) = spans.get_finished_spans()
    assert done.parent is not None and f"{done.parent.span_id:016x}" == TRACEPARENT[36:52]
    assert f"{done.context.trace_id:032x}" == TRACEPARENT[3:35]
    assert traceparent == f"00-{TRACEPARENT[3:35]}-{done.context.span_id:016x}-01"
    assert tracestate == "a=1"
    assert attributes(done)["messaging.kafka.offset"] == 7


def test_an_invalid_traceparent_starts_a_new_trace() -> None:
    tracer, spans = _tracer()
    env = Envelope.new(type="X", source="s", saga_id="o1", data=b"{}", traceparent="00-junk")
    tracer.consume(Delivery(env.to_record("t"), 0, 0), env).end("applied")
    (done,) = spans.get_finished_spans()
    assert done.parent is None


# Turning it on


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "none"}, ()),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            ("otlp",),
        ),
    ],
)
def test_the_standard_variables_turn_tracing_on(
    environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert exporters(environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "unknown exporter 'jaeger'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only http/protobuf",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc: only http/protobuf",
        ),
    ],
)
def test_a_setting_this_engine_cannot_honour_is_refused(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        exporters(environ)


def test_saga_run_with_an_unknown_exporter_is_a_one_line_error(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    proc = start(root, env={"OTEL_TRACES_EXPORTER": "zipkin"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == [
        "error: OTEL_TRACES_EXPORTER=zipkin: unknown exporter 'zipkin'; "
        "this engine ships otlp, console (or none)"
    ]


def test_a_collector_that_does_not_answer_does_not_hold_a_stopping_service(
    tmp_path: Path,
) -> None:
    # A collector that takes the connection and never answers: the SDK's own flush and
    # shutdown would each wait out the exporter's 10 s timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        root = make_project(tmp_path)
        proc = start(root, env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        try:
            asyncio.run(place(root, 2))
            wait_terminal(root, 2)
        finally:
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopping
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err
    assert took < 7.0, f"stopped {took:.1f} s after SIGTERM"


_UNTRACED_RUN = """
import asyncio, sys
from handlers.shop import Mix, Shop
from saga_registry.engine.app import Application
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.config import Settings
from saga_registry.engine.runner import RunnerSettings
from tests.runtime_kit import fresh_registry

async def main(where):
    settings = Settings(
        db="sqlite:///" + where + "/{service}.db", runner=RunnerSettings(poll_timeout_s=0.05)
    )
    app = Application(settings, registry=fresh_registry(), bus=EmbeddedBus(where + "/bus.db"))
    await app.start()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    shop = Shop(app)
    await shop.seed(customers=5)
    await shop.place(2, Mix())
    assert await shop.wait(2, 60)
    stop.set()
    await task
    await app.stop()

asyncio.run(main(sys.argv[1]))
print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""


def test_without_otel_variables_a_run_never_imports_opentelemetry(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    golden = sorted(str(p) for p in (ROOT / "tests" / "golden").iterdir())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *golden])
    done = subprocess.run(
        [sys.executable, "-c", _UNTRACED_RUN, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# In one process, with the SDK's in-memory exporter


@dataclass
class Traced:
    app: Application
    shop: Shop
    spans: InMemorySpanExporter
    provider: TracerProvider
    registry: Registry

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def runner(self, service: str) -> Any:
        return self.shop.parts[service].runner

    async def inbox_rows(self, service: str) -> int:
        async with self.shop.parts[service].db.transaction() as conn:
            return int(await conn.scalar(select(func.count()).select_from(tables.inbox)) or 0)

    async def state(self, service: str, saga_id: str) -> str | None:
        async with self.shop.parts[service].db.transaction() as conn:
            state = await conn.scalar(
                select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == saga_id)
            )
        return None if state is None else str(state)


@pytest.fixture(params=["sqlite", "postgres"])
async def traced(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Traced]:
    """The checkout's services in this process on a fresh embedded log, each on its own
    fresh database (SQLite, PostgreSQL), traced into an in-memory exporter."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    from saga_registry.engine.tracing import Tracing

    registry = fresh_registry()
    if request.param == "postgres":
        # The session's template, with databases of this test's own.
        template = request.getfixturevalue("pg_url")
        db = template.replace("{service}", f"{uuid.uuid4().hex[:8]}_{{service}}")
    else:
        db = f"sqlite:///{tmp_path}/{{service}}.db"
    settings = Settings(
        db=db,
        runner=RunnerSettings(
            poll_timeout_s=0.05, max_attempts=3, backoff_s=0.01, backoff_max_s=0.02
        ),
    )
    app = Application(
        settings,
        registry=registry,
        bus=EmbeddedBus(tmp_path / "bus.db"),
        tracing=Tracing(provider),
    )
    await app.start()
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        shop = Shop(app)
        await shop.seed(customers=50)
        yield Traced(app, shop, spans, provider, registry)
    finally:
        stop.set()
        await task
        await app.stop()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def of_saga(spans: Iterable[ReadableSpan], saga_id: str) -> list[ReadableSpan]:
    return [s for s in spans if attributes(s).get("saga.id") == saga_id]


def check_links(spans: list[ReadableSpan], registry: Registry) -> None:
    """Each consumer span's parent is the span that emitted its event: the consumer span
    of its cause in the event's producer, or the PRODUCER span that sent it."""
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        if span.kind is not SpanKind.CONSUMER:
            continue
        a = attributes(span)
        assert span.parent is not None, a
        parent = by_id[span.parent.span_id]
        p = attributes(parent)
        assert p["saga.service"] == registry.event(a["saga.event_type"]).producer, (a, p)
        if parent.kind is SpanKind.CONSUMER:
            assert p["messaging.message.id"] == a["saga.causation_id"], (a, p)
        else:
            assert parent.kind is SpanKind.PRODUCER
            assert p["messaging.message.id"] == a["messaging.message.id"], (a, p)


async def wait_for(check: Callable[[], Any], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout_s} s")


async def test_a_saga_is_one_trace_each_span_the_child_of_the_one_that_emitted_its_event(
    traced: Traced,
) -> None:
    (env,) = await traced.shop.place(1, Mix(), prefix="one")
    assert await traced.shop.wait(1, 60)
    await wait_for(lambda: _settled(traced, env.saga_id))
    spans = of_saga(traced.finished(), env.saga_id)
    assert len({s.context.trace_id for s in spans}) == 1
    (root,) = [s for s in spans if s.parent is None]
    assert root.kind is SpanKind.PRODUCER and root.name == "send OrderCreated"
    assert attributes(root)["saga.emitted_by"] == "initiate"
    assert attributes(root)["messaging.message.id"] == env.id
    check_links(spans, traced.registry)
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
    for service in traced.shop.parts:
        # An inbox row per event taken in; a copy the log holds twice is a duplicate.
        mine = [
            s
            for s in consumers
            if attributes(s)["saga.service"] == service
            and attributes(s)["saga.outcome"] != "duplicate"
        ]
        assert len(mine) == await traced.inbox_rows(service), service
    created = next(
        attributes(s)
        for s in consumers
        if attributes(s)["saga.service"] == "OMS" and s.name == "process OrderCreated"
    )
    assert created["saga.event_type"] == "OrderCreated"
    assert created["messaging.message.id"] == env.id
    assert created["messaging.system"] == "embedded"
    assert created["messaging.destination.name"] == traced.registry.events_topic.name
    assert created["saga.outcome"] == "applied"
    assert created["saga.state.before"] == traced.registry.state_machine.initial
    machine = traced.registry.state_machine
    entered = next(t.target for t in machine.transitions if t.event == "OrderCreated")
    assert created["saga.state.after"] == entered
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans)


async def _settled(traced: Traced, saga_id: str) -> bool:
    """Every service's inbox rows of the saga have their span (the last ones end just
    after their commit)."""
    consumers = [s for s in of_saga(traced.finished(), saga_id) if s.kind is SpanKind.CONSUMER]
    total = 0
    for service in traced.shop.parts:
        async with traced.shop.parts[service].db.transaction() as conn:
            total += int(
                await conn.scalar(
                    select(func.count())
                    .select_from(tables.inbox)
                    .where(tables.inbox.c.saga_id == saga_id)
                )
                or 0
            )
    return len(consumers) >= total > 0


async def test_a_failing_delivery_has_its_retries_and_dead_letter_on_one_error_span(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="saga.runner")
    payment = traced.runner("Payment")
    doomed = "batch-000002"

    def failing(reaction: Any) -> Any:
        async def react(event: Any, ctx: Any) -> Any:
            if ctx.saga_id == doomed:
                raise RuntimeError("the bank is on fire")
            return await reaction(event, ctx)

        return react

    payment.wrap_reaction("InventoryReserved", failing)
    envs = await traced.shop.place(6, Mix(), prefix="batch")
    assert await traced.shop.wait(5, 60)

    async def dead() -> bool:
        return any(attributes(s).get("saga.outcome") == "dead_lettered" for s in traced.finished())

    await wait_for(dead)
    for env in envs:
        if env.saga_id != doomed:
            await wait_for(lambda env=env: _settled(traced, env.saga_id))
    consumers = [s for s in traced.finished() if s.kind is SpanKind.CONSUMER]

    # A delivery (a record at its place in the log) has one span, whichever path applied
    # it: a batch that rolled back for the failure left none of its own. An event the log
    # holds twice (the relay publishes at least once) has a second span, a duplicate.
    def place_of(span: ReadableSpan) -> tuple[Any, ...]:
        a = attributes(span)
        return (
            a["saga.service"],
            a["messaging.destination.partition.id"],
            a["messaging.kafka.offset"],
        )

    places = [place_of(s) for s in consumers]
    assert len(places) == len(set(places))
    claimed = [
        (attributes(s)["saga.service"], attributes(s)["messaging.message.id"])
        for s in consumers
        if attributes(s)["saga.outcome"] != "duplicate"
    ]
    assert len(claimed) == len(set(claimed))
    # The failure came in a batch, which rolled back and went one by one.
    assert any("falls back to one by one" in r.getMessage() for r in caplog.records)
    (failed,) = [s for s in consumers if attributes(s).get("saga.outcome") == "dead_lettered"]
    a = attributes(failed)
    assert (a["saga.service"], a["saga.id"], a["saga.event_type"]) == (
        "Payment",
        doomed,
        "InventoryReserved",
    )
    assert failed.status.status_code is StatusCode.ERROR
    assert "the bank is on fire" in (failed.status.description or "")
    names = [e.name for e in failed.events]
    assert names == ["retry", "retry", "dead_lettered", "parked"]
    retry = failed.events[0].attributes or {}
    assert retry["exception.type"] == "RuntimeError"
    assert retry["exception.message"] == "the bank is on fire"
    assert retry["saga.attempt"] == 1
    for env in envs:
        if env.saga_id != doomed:
            check_links(of_saga(traced.finished(), env.saga_id), traced.registry)


def _deferring(reaction: Any) -> Any:
    async def react(event: Any, ctx: Any) -> None:
        return None  # the provider answers later (or never: the deadline fires)

    return react


async def _paid_and_waiting(traced: Traced, prefix: str) -> tuple[str, ReadableSpan]:
    """Place an order that Logistics defers; the saga's id and the Logistics span that
    moved it into `paid`."""
    traced.runner("Logistics").wrap_reaction("PaymentSucceeded", _deferring)
    (env,) = await traced.shop.place(1, Mix(), prefix=prefix)

    async def paid() -> bool:
        return await traced.state("Logistics", env.saga_id) == "paid" and any(
            attributes(s).get("saga.service") == "Logistics"
            and attributes(s).get("saga.state.after") == "paid"
            for s in of_saga(traced.finished(), env.saga_id)
        )

    await wait_for(paid)
    entered = next(
        s
        for s in of_saga(traced.finished(), env.saga_id)
        if attributes(s)["saga.service"] == "Logistics"
        and attributes(s).get("saga.state.after") == "paid"
    )
    return env.saga_id, entered


async def test_a_deadline_event_stays_in_the_saga_trace(traced: Traced) -> None:
    saga_id, entered = await _paid_and_waiting(traced, "late")
    timers = next(s.timers for s in traced.app.services if s.runner.name == "Logistics")
    assert await timers.fire_due(time.time() + 61) == 1
    assert await traced.shop.wait(1, 60)
    await wait_for(lambda: _settled(traced, saga_id))
    spans = of_saga(traced.finished(), saga_id)
    (fired,) = [s for s in spans if attributes(s).get("saga.emitted_by") == "deadline"]
    assert fired.kind is SpanKind.PRODUCER and fired.name == "send DeliveryFailed"
    assert fired.parent is not None and fired.parent.span_id == entered.context.span_id
    assert len({s.context.trace_id for s in spans}) == 1
    check_links(spans, traced.registry)
    refunded = [
        s
        for s in spans
        if s.kind is SpanKind.CONSUMER and attributes(s)["saga.event_type"] == "DeliveryFailed"
    ]
    assert refunded and all(s.parent.span_id == fired.context.span_id for s in refunded)  # type: ignore[union-attr]


async def test_a_deferred_answer_stays_in_the_saga_trace_and_links_the_caller(
    traced: Traced,
) -> None:
    saga_id, entered = await _paid_and_waiting(traced, "answered")
    logistics = traced.runner("Logistics")
    webhook = traced.provider.get_tracer("test").start_span("provider webhook")
    with trace.use_span(webhook, end_on_exit=True):
        env = await logistics.answer(
            DeliveryScheduled(order_id=saga_id, delivery_id="d1", carrier="ACME", eta_days=2)
        )
    assert await traced.shop.wait(1, 60)
    await wait_for(lambda: _settled(traced, saga_id))
    spans = of_saga(traced.finished(), saga_id)
    (answer,) = [s for s in spans if attributes(s).get("saga.emitted_by") == "answer"]
    assert answer.parent is not None and answer.parent.span_id == entered.context.span_id
    assert [link.context.span_id for link in answer.links] == [webhook.get_span_context().span_id]
    assert attributes(answer)["messaging.message.id"] == env.id
    assert len({s.context.trace_id for s in spans}) == 1
    check_links(spans, traced.registry)


async def test_an_initiate_inside_a_callers_span_joins_its_trace(traced: Traced) -> None:
    request = traced.provider.get_tracer("test").start_span("POST /orders")
    with trace.use_span(request, end_on_exit=True):
        (env,) = await traced.shop.place(1, Mix(), prefix="web")
    assert await traced.shop.wait(1, 60)
    (sent,) = [s for s in of_saga(traced.finished(), env.saga_id) if s.kind is SpanKind.PRODUCER]
    assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
    assert sent.context.trace_id == request.get_span_context().trace_id


# Across processes, on Kafka


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans the console exporter wrote: one JSON object per line."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_process_per_service_on_kafka_gives_one_trace_per_saga_and_metrics_of_it(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    tag, env = on_kafka(tmp_path, kafka_bootstrap, base)
    traced = {**env, "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "200"}

    def saga(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return saga_command(environ, *args)

    assert saga("shop", "seed", environ=env).returncode == 0
    # Files, not pipes: a service blocked writing into a full pipe would never stop.
    outs = {name: (tmp_path / f"{name}.out").open("w") for name in SERVICES}
    errs = {name: (tmp_path / f"{name}.err").open("w") for name in SERVICES}
    ports = {name: free_port() for name in SERVICES}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "saga_registry", "run", name],
            cwd=ROOT,
            env={**traced, "SAGA_METRICS_PORT": str(ports[name])},
            stdout=outs[name],
            stderr=errs[name],
            text=True,
        )
        for name in SERVICES
    }
    oid = f"traced-{tag}"
    try:
        placed = saga(
            "order", "place", "--customer", "c1", "--id", oid, "--item", "apple:2", environ=traced
        )
        assert placed.returncode == 0, placed.stderr
        history = tmp_path / "orderhistory.db"
        deadline = time.monotonic() + 120
        archived = False
        while time.monotonic() < deadline and not archived:
            if history.exists():
                # The table appears once OrderHistory has started.
                with (
                    sqlite3.connect(history, timeout=30) as conn,
                    contextlib.suppress(sqlite3.OperationalError),
                ):
                    query = "SELECT 1 FROM archive WHERE order_id = ?"
                    archived = conn.execute(query, (oid,)).fetchone() is not None
            time.sleep(0.3)
        assert archived, "the order was not archived"
        # Each service's /metrics counts what its database holds: a delivery applied
        # per inbox row (once every service has caught up).
        settle = time.monotonic() + 60
        for name in SERVICES:
            while True:
                applied = series(
                    scrape(ports[name]), "saga_deliveries_total", service=name, outcome="applied"
                )
                with sqlite3.connect(tmp_path / f"{name.lower()}.db", timeout=30) as conn:
                    (inbox,) = conn.execute("SELECT count(*) FROM saga_inbox").fetchone()
                if sum(applied.values()) == inbox or time.monotonic() > settle:
                    break
                time.sleep(0.3)
            assert sum(applied.values()) == inbox, (name, applied, inbox)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs.values()]
        for f in (*outs.values(), *errs.values()):
            f.close()
    assert codes == [0] * len(SERVICES), [
        (tmp_path / f"{n}.err").read_text()[-2000:] for n in SERVICES
    ]
    reg = load_registry(env["SAGA_REGISTRY"])
    spans = console_spans(placed.stdout)
    by_service = {n: console_spans((tmp_path / f"{n}.out").read_text()) for n in SERVICES}
    for name, mine in by_service.items():
        assert all(s["resource"]["attributes"]["service.name"] == name for s in mine), name
        spans += mine
    spans = [s for s in spans if s["attributes"].get("saga.id") == oid]
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    by_id = {s["context"]["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert root["kind"] == "SpanKind.PRODUCER" and root["name"] == "send OrderCreated"
    consumers = [s for s in spans if s["kind"] == "SpanKind.CONSUMER"]
    assert len(consumers) >= len(SERVICES)
    for span in consumers:
        a = span["attributes"]
        parent = by_id[span["parent_id"]]  # in another process's output
        p = parent["attributes"]
        assert p["saga.service"] == reg.event(a["saga.event_type"]).producer, (a, p)
        if parent["kind"] == "SpanKind.CONSUMER":
            assert p["messaging.message.id"] == a["saga.causation_id"], (a, p)
        else:
            assert p["messaging.message.id"] == a["messaging.message.id"], (a, p)
        assert a["messaging.system"] == "kafka"
    for name in SERVICES:
        with sqlite3.connect(tmp_path / f"{name.lower()}.db") as conn:
            (rows,) = conn.execute(
                "SELECT count(*) FROM saga_inbox WHERE saga_id = ?", (oid,)
            ).fetchone()
        mine = [
            s
            for s in consumers
            if s["attributes"]["saga.service"] == name
            and s["attributes"]["saga.outcome"] != "duplicate"
        ]
        assert len(mine) == rows, (name, len(mine), rows)


async def test_an_older_database_gets_the_trace_columns_beside_its_saga_states(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE saga_state (saga_id VARCHAR(256) PRIMARY KEY, state VARCHAR(64) NOT "
            "NULL, updated_at FLOAT NOT NULL, correlation_id VARCHAR(128), entered_by "
            "VARCHAR(128), started_at FLOAT)"
        )
        conn.execute("INSERT INTO saga_state VALUES ('o1', 'paid', 1.0, 'c', 'e', 1.0)")
    db = Database(database_url(f"sqlite:///{path}", "old"))
    await db.start()
    try:
        async with db.transaction() as conn:
            row = (
                await conn.execute(
                    select(tables.saga_state.c.state, tables.saga_state.c.traceparent)
                )
            ).one()
    finally:
        await db.stop()
    assert tuple(row) == ("paid", None)
