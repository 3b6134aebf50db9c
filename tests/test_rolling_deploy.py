"""A rolling deploy of a registry that raised two events' versions, as users run it: every
service already on the new registry but Flights, which produces FlightBooked; the old
Flights and the new one emit FlightBooked of versions 1 and 2 (at once on Kafka, where
they share the consumer group; one after the other on the embedded bus, which runs one
process per service), while outside producers start sagas with TripRequested of both
versions. Every saga ends, none dead-lettered: the upcasts read each old event."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from saga_registry.engine.bus import TopicSpec
from saga_registry.engine.buses.url import bus_from_url
from saga_registry.engine.envelope import Envelope
from saga_registry.registry import Registry, load_registry
from saga_registry.registry.versions import dataschema
from tests.autoreact import payload
from tests.test_saga_run import bus_url, make_project, start, wait_terminal
from tests.versioned import trip_v2

__all__ = ["bus_url"]  # the fixture: both buses


async def place(bus: str, registry: Registry, ids: range, with_schema: bool) -> None:
    """Start sagas `trip-<i>` with TripRequested of `registry`'s version, carrying its
    dataschema if `with_schema` (a producer that predates versions sends none)."""
    first = "TripRequested"
    version = registry.event(first).version
    envs = []
    for i in ids:
        data = payload(registry, first, f"trip-{i}")
        data["notes" if version == 1 else "remarks"] = "window seat"
        envs.append(
            Envelope.new(
                type=first,
                source="tests/front-office",
                saga_id=f"trip-{i}",
                data=json.dumps(data).encode(),
                dataschema=dataschema(registry.name, first, version) if with_schema else "",
            )
        )
    async with bus_from_url(bus) as b:
        topic = registry.events_topic
        await b.ensure_topics([TopicSpec(topic.name, topic.partitions)])
        await b.publish([e.to_record(topic.name) for e in envs])


def flight_versions(dbs: Path) -> dict[str, int]:
    """How many FlightBooked of each dataschema Flights emitted (its outbox)."""
    if not (dbs / "flights.db").exists():
        return {}
    with sqlite3.connect(dbs / "flights.db", timeout=30) as conn:
        try:
            rows = conn.execute("SELECT headers FROM saga_outbox").fetchall()
        except sqlite3.OperationalError:  # not made yet
            return {}
    seen: dict[str, int] = {}
    for (headers,) in rows:
        h = dict(json.loads(headers))
        if h["ce_type"] == "FlightBooked":
            seen[h.get("ce_dataschema", "")] = seen.get(h.get("ce_dataschema", ""), 0) + 1
    return seen


def wait_for(
    what: str, check: Callable[[], bool], procs: list[subprocess.Popen[str]], timeout: float = 60
) -> None:
    end = time.monotonic() + timeout
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} ended: {proc.communicate()[1]}")
        if time.monotonic() > end:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_old_and_new_producers_together_every_saga_ends(tmp_path: Path, bus_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    old = make_project(tmp_path, name="old", tag=tag)
    new = make_project(tmp_path, name="new", tag=tag, edit=trip_v2)
    v1 = load_registry(old / "registry" / "saga.yaml")
    v2 = load_registry(new / "registry" / "saga.yaml")
    dbs = new / "dbs"
    shared = ["--db", f"sqlite:///{dbs}/{{service}}.db"]
    bus = bus_url if bus_url.startswith("kafka") else f"embedded://{tmp_path / 'bus.db'}"
    v1_urn = dataschema(v1.name, "FlightBooked", 1)
    v2_urn = dataschema(v2.name, "FlightBooked", 2)
    others = [s.name for s in v2.services if s.name != "Flights"]
    rest = start(new, *others, *shared, bus=bus)
    old_flights = start(old, "Flights", *shared, bus=bus)
    new_flights = None
    try:
        # Before the deploy: old producers only.
        asyncio.run(place(bus, v1, range(0, 20), with_schema=False))
        wait_for(
            "the old Flights at work",
            lambda: flight_versions(dbs).get(v1_urn, 0) >= 5,
            [rest, old_flights],
        )
        n = 20
        if bus.startswith("kafka"):
            # Both Flights in one group: each emits its own version of FlightBooked once
            # the group has given the new one partitions; sagas keep coming meanwhile.
            new_flights = start(new, "Flights", *shared, bus=bus)
            give_up = time.monotonic() + 120
            while v2_urn not in flight_versions(dbs):
                assert time.monotonic() < give_up, "the new Flights never took part"
                for proc in (rest, old_flights, new_flights):
                    assert proc.poll() is None, proc.communicate()[1]
                asyncio.run(place(bus, v1, range(n, n + 4), with_schema=True))
                n += 4
                time.sleep(1)
            assert old_flights.poll() is None, "the old Flights ended early"
            stop(old_flights)
        else:
            # One process per service: the new Flights takes over the old one's place,
            # with sagas in flight whose FlightBooked it did not write.
            asyncio.run(place(bus, v1, range(n, n + 40), with_schema=True))
            n += 40
            stop(old_flights)
            new_flights = start(new, "Flights", *shared, bus=bus)
        # After it: old and new outside producers at once.
        asyncio.run(place(bus, v1, range(n, n + 20), with_schema=True))
        asyncio.run(place(bus, v2, range(n + 20, n + 40), with_schema=True))
        asyncio.run(place(bus, v1, range(n + 40, n + 50), with_schema=False))
        n += 50
        final = wait_terminal(new, n, timeout=180)
        assert set(final.values()) == {"confirmed"}, final
        versions = flight_versions(dbs)
        assert versions.get(v1_urn, 0) >= 5 and versions.get(v2_urn, 0) >= 1, versions
        assert sum(versions.values()) == n, versions
        for s in v2.services:
            with sqlite3.connect(dbs / f"{s.name.lower()}.db", timeout=30) as conn:
                (parked,) = conn.execute("SELECT count(*) FROM saga_parked").fetchone()
            assert parked == 0, f"{s.name} parked {parked} saga(s)"
    finally:
        for proc in (rest, old_flights, new_flights):
            if proc is not None and proc.poll() is None:
                proc.kill()
