"""`saga start`, `saga sagas` and `saga trace` on a registry that is not checkout: the trip
booking project generated into a temporary folder, its services run by `saga run` in a
real process on an embedded log, sagas begun from the command line and from outside."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from saga_registry.codegen import write
from saga_registry.codegen.diagrams import KIND_COLOURS, saga_path
from saga_registry.engine import inspect, tables
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.trace import Trace, build_trace
from saga_registry.registry import Registry, load_registry
from saga_registry.registry.projection import project as projections_of
from tests.autoreact import payload
from tests.helpers import ROOT, TRIP

SAGA = [sys.executable, "-m", "saga_registry"]
HOSTILE = 'x"; digraph { a -> b }\n<b>bold</b> \\'
"""A saga id with a quote, a line break, HTML-like text and a trailing backslash."""

# Billing fails for these sagas: their CarRented is dead-lettered and the saga parks.
BROKEN_REACT = """
import autoreact

_Base = autoreact.make("Billing")


async def _broken(self, event, ctx):
    if ctx.saga_id.startswith("broken-"):
        raise RuntimeError(f"card processor down for {ctx.saga_id}")
    return await _Base.on_car_rented(self, event, ctx)


Billing = type("Billing", (_Base,), {"on_car_rented": _broken})
"""


@dataclass
class Project:
    root: Path
    registry: Registry
    env: dict[str, str]

    def saga(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SAGA, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def trace(self, saga_id: str, *args: str) -> dict[str, Any]:
        done = self.saga("trace", saga_id, "--json", *args)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def sagas(self, *args: str) -> dict[str, Any]:
        done = self.saga("sagas", "--json", *args)
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def db_rows(self, service: str, sql: str, *params: str) -> list[tuple[Any, ...]]:
        path = self.root / "dbs" / f"{service.lower()}.db"
        if not path.exists():
            return []
        with sqlite3.connect(path, timeout=30) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:  # tables not made yet
                return []


def make_project(root: Path) -> Project:
    """The trip registry generated under `root`, on topics no other test uses, every
    reaction answering at once (tests/autoreact.py) except Billing's for `broken-` sagas."""
    (root / "registry").mkdir(parents=True)
    tag = uuid.uuid4().hex[:8]
    source = TRIP.read_text(encoding="utf-8").replace(
        "name: trips.booking.", f"name: t{tag}.trips.booking."
    )
    (root / "registry" / "saga.yaml").write_text(source, encoding="utf-8")
    reg = load_registry(root / "registry" / "saga.yaml")
    write(reg, root / "registry" / "saga.yaml", root, render=False)
    shutil.copy(ROOT / "tests" / "autoreact.py", root / "autoreact.py")
    for s in reg.services:
        (root / "handlers" / f"{s.module}.py").write_text(
            f"from autoreact import make\n\n{s.name} = make({s.name!r})\n"
        )
    (root / "handlers" / "billing.py").write_text(BROKEN_REACT)
    env = {
        **os.environ,
        "PYTHONPATH": f"{root}{os.pathsep}{ROOT}",
        "SAGA_BUS": "embedded:bus.db",
        "SAGA_DB_URL": "sqlite:///dbs/{service}.db",
        "SAGA_LOG_LEVEL": "WARNING",
    }
    return Project(root, reg, env)


def trip_data(reg: Registry, saga_id: str) -> dict[str, Any]:
    data = payload(reg, "TripRequested", saga_id)
    del data[reg.key]
    return data


def wait_for(what: str, check: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def publish(root: Path, reg: Registry, *envelopes: Envelope) -> None:
    async with EmbeddedBus(root / "bus.db") as bus:
        await bus.publish([e.to_record(reg.events_topic.name) for e in envelopes])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """Four sagas on running services: `ok-1` and HOSTILE begun with `saga start`, `ext-1`
    published from outside twice (a duplicate) and then sent a late FlightBooked (not
    allowed once confirmed), and `broken-1`, whose payment reaction fails every retry."""
    p = make_project(tmp_path_factory.mktemp("ops") / "project")
    reg = p.registry
    log = (p.root / "run.log").open("w")
    proc = subprocess.Popen(
        [*SAGA, "run"], cwd=p.root, env=p.env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        for saga_id in ("ok-1", "broken-1", HOSTILE):
            started = p.saga(
                "start",
                "TripRequested",
                "--data",
                json.dumps(trip_data(reg, saga_id)),
                "--saga-id",
                saga_id,
            )
            assert started.returncode == 0, started.stderr
            assert started.stdout == f"{saga_id}\n"
        first = Envelope.new(
            type="TripRequested",
            source="tests",
            saga_id="ext-1",
            data=json.dumps(payload(reg, "TripRequested", "ext-1")).encode(),
        )
        asyncio.run(publish(p.root, reg, first, first))

        # Each service takes in only its projection's events: the services that see an
        # event are the ones to ask about it.
        takers = projections_of(reg)

        def confirmed_everywhere(saga_id: str) -> bool:
            sql = "SELECT state FROM saga_state WHERE saga_id = ?"
            return all(
                p.db_rows(s.name, sql, saga_id) == [("confirmed",)]
                for s in reg.services
                if "TripConfirmed" in takers[s.name].events
            )

        wait_for("ext-1 confirmed", lambda: confirmed_everywhere("ext-1"))
        late = Envelope.new(
            type="FlightBooked",
            source="tests",
            saga_id="ext-1",
            data=json.dumps(payload(reg, "FlightBooked", "ext-1")).encode(),
        )
        asyncio.run(publish(p.root, reg, late))
        skipped = "SELECT count(*) FROM saga_skipped WHERE saga_id = ? AND reason = ?"
        wait_for(
            "the late event skipped by every service that takes it in",
            lambda: all(
                p.db_rows(s.name, skipped, "ext-1", "not_allowed") == [(1,)]
                for s in reg.services
                if "FlightBooked" in takers[s.name].events
            ),
        )
        wait_for("ok-1 confirmed", lambda: confirmed_everywhere("ok-1"))
        wait_for("the hostile saga confirmed", lambda: confirmed_everywhere(HOSTILE))
        parked = "SELECT count(*) FROM saga_parked WHERE saga_id = ?"
        wait_for("broken-1 parked", lambda: p.db_rows("Billing", parked, "broken-1") == [(1,)])
        yield p
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def test_trace_lists_events_in_log_order_with_states_and_each_services_action(
    project: Project,
) -> None:
    doc = project.trace("ext-1")
    events = doc["events"]
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert [e["event_type"] for e in events] == [
        "TripRequested",
        "TripRequested",
        "FlightBooked",
        "HotelBooked",
        "CarRented",
        "PaymentCaptured",
        "TripConfirmed",
        "FlightBooked",
    ]
    assert [(e["before"], e["after"], e["note"]) for e in events] == [
        ("new", "requested", ""),
        ("requested", "requested", "duplicate"),
        ("requested", "flight_booked", ""),
        ("flight_booked", "hotel_booked", ""),
        ("hotel_booked", "car_rented", ""),
        ("car_rented", "paid", ""),
        ("paid", "confirmed", ""),
        ("confirmed", "confirmed", "not allowed"),
    ]
    assert [e["producer"] for e in events] == [
        "tests",
        "tests",
        "Flights",
        "Hotels",
        "CarRental",
        "Billing",
        "Booking",
        "tests",
    ]
    first, dup, flight = events[0], events[1], events[2]
    assert first["actions"]["Flights"] == {"action": "reacted", "detail": "-> FlightBooked"}
    assert first["actions"]["Hotels"] == {"action": "applied", "detail": ""}
    assert {a["action"] for a in dup["actions"].values()} == {"skipped"}
    assert dup["actions"]["Booking"]["detail"] == "duplicate"
    assert flight["actions"]["Hotels"]["detail"] == "-> HotelBooked"
    # The late FlightBooked: Hotels (which reacts to it) stored flight_booked last and
    # refuses it; Notifications never takes it in.
    assert events[-1]["actions"]["Hotels"] == {
        "action": "skipped",
        "detail": "not_allowed in flight_booked",
    }
    assert events[-1]["actions"]["Notifications"] == {"action": "passed", "detail": ""}
    assert doc["state"] == "confirmed" and doc["outcome"] == "success"
    assert doc["path"] == [
        "new",
        "requested",
        "flight_booked",
        "hotel_booked",
        "car_rented",
        "paid",
        "confirmed",
    ]


def test_trace_shows_the_dead_lettered_event_and_the_services_that_did_not_get_further(
    project: Project,
) -> None:
    doc = project.trace("broken-1")
    rented = next(e for e in doc["events"] if e["event_type"] == "CarRented")
    billing = rented["actions"]["Billing"]
    assert billing["action"] == "dead-lettered"
    assert "RuntimeError: card processor down for broken-1" in billing["detail"]
    # Only Billing takes CarRented in; the others pass it.
    assert rented["actions"]["Booking"]["action"] == "passed"
    # No service took CarRented in (Billing dead-lettered it): the saga is where it was.
    assert doc["state"] == "hotel_booked" and doc["outcome"] is None
    assert doc["events"][-1]["event_type"] == "CarRented"
    # Without the bus, the parked row alone still says so.
    offline = project.trace("broken-1", "--bus", "embedded:elsewhere.db")
    rented = next(e for e in offline["events"] if e["event_type"] == "CarRented")
    assert rented["actions"]["Billing"]["action"] == "dead-lettered"
    assert "card processor down" in rented["actions"]["Billing"]["detail"]
    assert not (project.root / "elsewhere.db").exists()


def test_trace_prints_one_line_per_event(project: Project) -> None:
    done = project.saga("trace", "ext-1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "saga ext-1: 8 event(s), now confirmed (success)"
    assert len(lines) == 9
    assert "requested -> requested (duplicate)" in lines[2]
    assert "Booking: skipped (duplicate)" in lines[2]
    assert "Flights: reacted (-> FlightBooked)" in lines[1]


def test_trace_of_an_unknown_saga_is_one_line(project: Project) -> None:
    done = project.saga("trace", "no-such-trip")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: no service has seen saga 'no-such-trip'"]


def test_trace_draws_a_hostile_saga_id_safely(project: Project, dot_installed: None) -> None:
    dot_file, svg_file = project.root / "path.dot", project.root / "path.svg"
    done = project.saga("trace", HOSTILE, "--dot", str(dot_file), "--svg", str(svg_file))
    assert done.returncode == 0, done.stderr
    source = dot_file.read_text(encoding="utf-8")
    # The id's quote escaped, its backslash doubled, its line break a DOT \n escape: the
    # `digraph {` in it stays inside the label.
    assert 'label="saga x\\"; digraph { a -> b }\\n<b>bold</b> \\\\: confirmed"' in source
    rendered = subprocess.run(
        ["dot", "-Tsvg"], input=source, capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "x&quot;; digraph { a &#45;&gt; b }" in rendered.stdout
    assert "&lt;b&gt;bold&lt;/b&gt; \\" in rendered.stdout
    svg = svg_file.read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and "&lt;b&gt;bold" in svg


def test_sagas_counts_by_status_and_state(project: Project) -> None:
    doc = project.sagas()
    assert doc["total"] == 4
    assert doc["counts"]["status"] == {"in-flight": 0, "stuck": 0, "parked": 1, "ended": 3}
    assert doc["counts"]["state"] == {"hotel_booked": 1, "confirmed": 3}
    assert doc["counts"]["outcome"] == {"success": 3}
    by_id = {s["saga_id"]: s for s in doc["sagas"]}
    assert set(by_id) == {"ok-1", "ext-1", "broken-1", HOSTILE}
    # Billing dead-lettered its CarRented: the saga waits there, parked.
    assert by_id["broken-1"]["status"] == "parked"
    # Billing, the one service that takes CarRented in, never applied it: the most
    # advanced state a service recorded is shown (CarRental's, which emitted CarRented).
    assert by_id["broken-1"]["views"]["Billing"] == "requested"
    assert by_id["broken-1"]["state"] == "hotel_booked"
    text_out = project.saga("sagas")
    assert text_out.stdout.splitlines()[0] == (
        "4 saga(s): 0 in-flight, 0 stuck, 1 parked, 3 ended (3 success)"
    )
    assert text_out.stdout.splitlines()[1] == "by state: confirmed 3, hotel_booked 1"


def test_sagas_stuck_for_and_filters(project: Project) -> None:
    # Parked says more than stuck: the saga waits for `saga dlq replay`, not for time.
    stuck = project.sagas("--stuck-for", "0")
    assert stuck["counts"]["status"] == {"in-flight": 0, "stuck": 0, "parked": 1, "ended": 3}
    only = project.sagas("--state", "parked")
    assert [s["saga_id"] for s in only["sagas"]] == ["broken-1"]
    text_out = project.saga("sagas", "--state", "parked").stdout
    assert "parked in Billing" in text_out, text_out
    assert project.sagas("--state", "hotel_booked")["total"] == 1
    assert project.sagas("--outcome", "success")["total"] == 3
    assert project.sagas("--outcome", "failure")["total"] == 0
    limited = project.sagas("--limit", "2")
    assert limited["total"] == 4 and len(limited["sagas"]) == 2
    bad = project.saga("sagas", "--state", "lost")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: --state 'lost': not a state of registry/saga.yaml")
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["FlightBooked", "--data", "{}"],
            "error: FlightBooked does not start a saga in registry/saga.yaml: "
            "the events that can are TripRequested",
        ),
        (
            ["TripRequestd", "--data", "{}"],
            "error: TripRequestd (did you mean 'TripRequested'?) does not start a saga in "
            "registry/saga.yaml: the events that can are TripRequested",
        ),
        (["TripRequested", "--data", "{nope"], "error: --data is not JSON: "),
        (["TripRequested", "--data", "[]"], "error: --data must be a JSON object"),
        (
            ["TripRequested", "--data", '{"customer_id": "c1"}'],
            "error: invalid TripRequested payload: travellers, itinerary, nights, car_class, "
            "budget, currency: Field required",
        ),
        (
            ["TripRequested", "--data", '{"booking_id": "a"}', "--saga-id", "b"],
            "error: --saga-id 'b' differs from the payload's booking_id 'a'",
        ),
    ],
)
def test_start_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    p = make_project(tmp_path / "project")
    done = p.saga("start", *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not (p.root / "dbs").exists()


def test_start_without_a_key_makes_one_and_publishes_before_exiting(tmp_path: Path) -> None:
    p = make_project(tmp_path / "project")
    done = p.saga("start", "TripRequested", "--data", json.dumps(trip_data(p.registry, "-")))
    assert done.returncode == 0, done.stderr
    saga_id = done.stdout.strip()
    assert len(saga_id) == 32 and int(saga_id, 16) >= 0

    async def records() -> list[Any]:
        async with EmbeddedBus(p.root / "bus.db") as bus:
            return await bus.read_all(p.registry.events_topic.name)

    published = asyncio.run(records())
    assert [d.record.key for d in published] == [saga_id.encode()]
    sent = p.db_rows("Booking", "SELECT count(*) FROM saga_outbox WHERE sent_at IS NULL")
    assert sent == [(0,)]
    # The same saga again: refused, nothing queued (every service would skip it).
    again = p.saga(
        "start",
        "TripRequested",
        "--saga-id",
        saga_id,
        "--data",
        json.dumps(trip_data(p.registry, "-")),
    )
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"error: saga {saga_id} exists already (just started): a saga starts once"
    ]
    assert p.db_rows("Booking", "SELECT count(*) FROM saga_outbox") == [(1,)]


def test_sagas_reads_without_creating_databases(tmp_path: Path) -> None:
    p = make_project(tmp_path / "project")
    done = p.saga("sagas")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "note: Booking: skipped (no database file dbs/booking.db)"
    assert (
        lines[-1]
        == "error: no service database could be read under --db sqlite:///dbs/{service}.db"
    )
    assert not (p.root / "dbs").exists()


def test_most_advanced_view_wins_on_both_databases(db_url: str) -> None:
    """The merge of the services' copies, read from SQLite and PostgreSQL alike; a
    service whose database does not exist is skipped and its database is not created."""
    reg = load_registry(TRIP)
    template = db_url.replace("{service}", f"ops{uuid.uuid4().hex[:6]}_{{service}}")
    now = time.time()
    copies = {
        # Booking is behind, Flights ahead; Hotels saw the end.
        "Booking": [("a", "requested", now - 5), ("b", "requested", now - 9)],
        "Flights": [("a", "flight_booked", now - 4), ("b", "flight_failed", now - 8)],
        "Hotels": [("a", "hotel_booked", now - 3), ("b", "cancelled", now - 10)],
    }
    # Saga c: Booking took in the first event last, after Flights had moved on.
    copies["Booking"].append(("c", "requested", now - 1))
    copies["Flights"].append(("c", "flight_booked", now - 6))

    async def go() -> tuple[list[inspect.SagaView], list[str], bool]:
        for service, rows in copies.items():
            db = Database(database_url(template, service))
            await db.start()
            async with db.transaction() as conn:
                for saga_id, state, at in rows:
                    await conn.execute(
                        insert(tables.saga_state).values(
                            saga_id=saga_id, state=state, updated_at=at, started_at=now - 20
                        )
                    )
                if service == "Flights":
                    await conn.execute(
                        insert(tables.timers).values(
                            saga_id="a", deadline="t", state="requested", due_at=now - 1
                        )
                    )
                    await conn.execute(
                        insert(tables.timers).values(
                            saga_id="c", deadline="t", state="flight_booked", due_at=now + 60
                        )
                    )
            await db.stop()
        views, notes = await inspect.saga_views(reg, template)
        return views, notes, await _exists(database_url(template, "Billing"))

    views, notes, billing_exists = asyncio.run(go())
    by_id = {v.saga_id: v for v in views}
    assert (by_id["a"].state, by_id["a"].seen_by) == ("hotel_booked", "Hotels")
    # Terminal wins although it is the oldest update.
    assert (by_id["b"].state, by_id["b"].seen_by) == ("cancelled", "Hotels")
    assert dict(by_id["a"].views) == {
        "Booking": "requested",
        "Flights": "flight_booked",
        "Hotels": "hotel_booked",
    }
    # The timer belongs to a state the saga left: not a pending deadline.
    assert by_id["a"].due_at is None
    # Ahead on the machine wins over updated later; its state's deadline is pending.
    assert (by_id["c"].state, by_id["c"].seen_by) == ("flight_booked", "Flights")
    assert by_id["c"].due_at == pytest.approx(now + 60)
    assert len(notes) == 3 and notes[0].startswith("CarRental: skipped (no database")
    assert not billing_exists


async def _exists(url: Any) -> bool:
    if url.get_backend_name() == "sqlite":
        return Path(url.database).exists()
    admin = create_async_engine(url.set(database="postgres"))
    try:
        async with admin.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
            )
            return found is not None
    finally:
        await admin.dispose()


def test_status_of_a_saga_past_its_deadline_is_stuck() -> None:
    terminal = frozenset({"confirmed"})
    now = 1000.0
    view = inspect.SagaView("a", "requested", now - 1, now - 2, None, "Flights", (), due_at=now - 1)
    assert inspect.status(view, terminal, None, now) == "stuck"
    waiting = inspect.SagaView("a", "requested", now - 1, now - 2, None, "Flights", (), now + 60)
    assert inspect.status(waiting, terminal, None, now) == "in-flight"
    assert inspect.status(waiting, terminal, 0.5, now) == "stuck"
    ended = inspect.SagaView("a", "confirmed", now - 99, now - 99, None, "Booking", ())
    assert inspect.status(ended, terminal, 0.5, now) == "ended"
    parked = inspect.SagaView(
        "a", "requested", now - 1, now - 2, None, "Flights", (), now - 1, parked_in=("Hotels",)
    )
    assert inspect.status(parked, terminal, 0.5, now) == "parked"


def test_saga_path_quotes_any_saga_id_and_colours_the_steps_by_kind(dot_installed: None) -> None:
    reg = load_registry(TRIP)
    trace = Trace(
        saga_id='a"b\\',
        rows=[],
        pending=[],
        visited=["new", "requested", "flight_failed"],
        taken=[
            ("new", "TripRequested", "requested"),
            ("requested", "FlightBookingFailed", "flight_failed"),
        ],
    )
    timeline = [
        ("TripRequested", "tests", {"Flights": "reacted (-> FlightBookingFailed)"}),
        ("FlightBookingFailed", "Flights", {"Booking": "skipped (<b>not</b> & allowed)"}),
    ]
    source = saga_path(reg, trace.saga_id, trace.state, trace.visited, trace.taken, timeline)
    assert '"1. TripRequested"' in source and '"2. FlightBookingFailed"' in source
    # The events beside it, one lane per service, every text escaped for the HTML label.
    assert "cluster_timeline" in source and "emitted" in source
    assert "skipped (&lt;b&gt;not&lt;/b&gt; &amp; allowed)" in source
    # The steps taken wear their event's kind, as in the registry's own diagrams.
    assert f'label="2. FlightBookingFailed" color="{KIND_COLOURS["failure"]}"' in source
    done = subprocess.run(
        ["dot", "-Tsvg"], input=source, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "saga a&quot;b\\: flight_failed" in done.stdout


def _inbox(event_id: str, kind: str, offset: int, at: float, source: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "source": source,
        "event_type": kind,
        "saga_id": "s",
        "received_at": at,
        "log_partition": 3,
        "log_offset": offset,
    }


def test_trace_orders_by_log_offset_even_against_the_clock() -> None:
    """Rows arrive in no order and with clocks that disagree with the log (a batch shares
    one time; services run at their own pace): the log offset alone orders the trace."""
    reg = load_registry(TRIP)
    src = "saga/trip_booking/"
    log = [
        ("e1", "TripRequested", 10, "outside"),
        ("e2", "FlightBookingFailed", 11, src + "Flights/deadline"),
        ("e3", "TripCancelled", 12, src + "Booking"),
    ]
    # Booking took all three in one batch (one time); Flights' clock runs behind.
    booking = [_inbox(e, k, o, 500.0, s) for e, k, o, s in reversed(log)]
    flights = [_inbox(e, k, o, 400.0 - o, s) for e, k, o, s in reversed(log)]
    unsent = {
        "event_id": "e4",
        "headers": [["ce_type", "TripConfirmed"], ["ce_id", "e4"]],
        "created_at": 501.0,
        "sent_at": None,
    }
    emitted = {
        "event_id": "e3",
        "headers": [["ce_type", "TripCancelled"], ["ce_causationid", "e2"]],
        "created_at": 500.0,
        "sent_at": 500.0,
    }
    fired = {
        "event_id": "e2",
        "headers": [
            ["ce_type", "FlightBookingFailed"],
            ["ce_source", src + "Flights/deadline"],
            ["ce_causationid", "e1"],
        ],
        "created_at": 499.0,
        "sent_at": 499.0,
    }
    records = {
        "Booking": inspect.ServiceRecords(inbox=booking, outbox=[emitted, unsent]),
        # The deadline's event names the event that entered `requested` as its cause.
        "Flights": inspect.ServiceRecords(inbox=flights, outbox=[fired]),
        "Hotels": inspect.ServiceRecords(
            inbox=[_inbox("e1", "TripRequested", 10, 300.0, "outside")],
            parked={"event_id": "e2", "error": "RuntimeError: boom"},
        ),
    }
    t = build_trace(reg, "s", records)
    assert [(r.offset, r.event_type) for r in t.rows] == [
        (10, "TripRequested"),
        (11, "FlightBookingFailed"),
        (12, "TripCancelled"),
    ]
    assert [(r.before, r.after) for r in t.rows] == [
        ("new", "requested"),
        ("requested", "flight_failed"),
        ("flight_failed", "cancelled"),
    ]
    assert [r.producer for r in t.rows] == ["outside", "Flights (deadline)", "Booking"]
    assert str(t.rows[1].actions["Booking"]) == "reacted (-> TripCancelled)"
    assert str(t.rows[0].actions["Booking"]) == "applied"
    # Flights' reaction emitted nothing: its timer did, and says so.
    assert str(t.rows[0].actions["Flights"]) == "reacted (deadline fired: FlightBookingFailed)"
    assert str(t.rows[0].actions["Hotels"]) == "applied"
    assert str(t.rows[1].actions["Hotels"]) == "dead-lettered (RuntimeError: boom)"
    assert str(t.rows[2].actions["Hotels"]) == "held (saga parked here)"
    assert str(t.rows[0].actions["Billing"]) == "-"
    assert [(p.service, p.event_type, p.sent) for p in t.pending] == [
        ("Booking", "TripConfirmed", False)
    ]
    assert t.state == "cancelled"


def test_svg_without_graphviz_is_one_line(tmp_path: Path) -> None:
    p = make_project(tmp_path / "project")
    p.env["PATH"] = str(tmp_path / "empty")  # no `dot` anywhere on it
    done = p.saga("trace", "any", "--svg", str(tmp_path / "path.svg"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: --svg {tmp_path / 'path.svg'}: Graphviz 'dot' is not installed"
    ]
