"""Each service's projection of the state machine (`registry.projection`): which events it
takes in, and that its decisions are the whole machine's on every log the choreography
can write (explored exhaustively by `counterexample`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from saga_registry.registry.loader import load_registry
from saga_registry.registry.model import Registry
from saga_registry.registry.projection import Projection, counterexample, project

REGISTRIES = Path(__file__).parent / "registries"

# Two services react to one event, each with an event that leaves the state: whichever is
# first on the log wins, and the other arrives late. Ledger books an approval only if the
# saga was not flagged first, so it must see Flagged although it does not react to it.
RACE = """
version: 1
saga: {name: review, key: case_id}
topics:
  events: {name: review.events, partitions: 1}
  dead_letter: {name: review.events.dlq, partitions: 1}
services:
  Desk: {initiates: [Opened], reacts: {}}
  Approver: {reacts: {Opened: {emits: [Approved]}}}
  Auditor: {reacts: {Opened: {emits: [Flagged]}}}
  Ledger: {reacts: {Approved: {emits: [Booked]}}}
definitions:
  Id: {type: string, minLength: 1, maxLength: 64}
  Case: &case {required: [case_id], properties: {case_id: {$ref: Id}}}
events:
  Opened: {stage: {en: Opened}, kind: domain, producer: Desk, payload: *case}
  Approved: {stage: {en: Approved}, kind: domain, producer: Approver, payload: *case}
  Flagged: {stage: {en: Flagged}, kind: domain, producer: Auditor, payload: *case}
  Booked: {stage: {en: Booked}, kind: domain, producer: Ledger, payload: *case}
state_machine:
  initial: new
  states:
    new: {}
    open: {}
    approved: {}
    booked: {terminal: true, outcome: success}
    flagged: {terminal: true, outcome: failure}
  transitions:
    - {on: Opened, from: new, to: open}
    - {on: Approved, from: open, to: approved}
    - {on: Flagged, from: open, to: flagged}
    - {on: Booked, from: approved, to: booked}
"""


def race(tmp_path: Path) -> Registry:
    path = tmp_path / "race.yaml"
    path.write_text(RACE)
    return load_registry(path)


def test_the_orders_services_take_in_only_what_they_need() -> None:
    registry = load_registry(REGISTRIES / "orders.yaml")
    ps = project(registry)
    assert ps["Cart"].events == set()
    assert ps["Payment"].events == {"OrderCreated", "InventoryReserved", "DeliveryFailed"}
    # Logistics fires the delivery deadline and answers late: it sees the state's exits.
    assert ps["Logistics"].follows == {"OrderCreated", "DeliveryScheduled", "DeliveryFailed"}
    assert ps["OrderHistory"].whole  # reacts to every event
    happy = ["OrderCreated", "InventoryReserved", "PaymentSucceeded", "DeliveryScheduled"]
    # Deliveries that touch a database on the happy path: 24 when every service took in
    # every event; 12 with projections (Payment, Logistics and OMS take OrderCreated in
    # only to refuse events of sagas that never began); 9 with signed events.
    assert sum(e in p.events for p in ps.values() for e in happy) == 12
    signed = project(dataclasses.replace(registry, signed_events=True))
    assert sum(e in p.events for p in signed.values() for e in happy) == 9


@pytest.mark.parametrize("name", ["orders.yaml", "trip_booking.yaml"])
def test_projections_decide_as_the_whole_machine_on_every_log(name: str) -> None:
    registry = load_registry(REGISTRIES / name)
    assert counterexample(registry, project(registry)) is None


def test_a_race_makes_a_service_follow_the_event_that_wins_it(tmp_path: Path) -> None:
    registry = race(tmp_path)
    ps = project(registry)
    assert ps["Ledger"].reacts == {"Approved"} and "Flagged" in ps["Ledger"].follows
    assert ps["Ledger"].decisions[("open", "Approved")] == "approved"
    assert ps["Ledger"].decisions[("flagged", "Approved")] is None  # late: refused
    assert counterexample(registry, ps) is None


def test_the_check_finds_a_projection_that_misses_an_event(tmp_path: Path) -> None:
    registry = race(tmp_path)
    ps = project(registry)
    blind = ps["Ledger"]
    # Without Flagged, Ledger would book an approval that lost the race.
    ps["Ledger"] = Projection(
        blind.service,
        blind.events - {"Flagged"},
        blind.reacts,
        {k: v for k, v in blind.decisions.items() if k[1] != "Flagged" and k[0] != "flagged"},
    )
    assert counterexample(registry, ps) == ["Opened", "Flagged", "Approved"]


def test_signed_events_spare_the_events_that_begin_a_saga() -> None:
    registry = load_registry(REGISTRIES / "orders.yaml")
    signed = project(dataclasses.replace(registry, signed_events=True))
    assert "OrderCreated" not in signed["Payment"].events
    assert "OrderCreated" in project(registry)["Payment"].events


def test_projections_off_make_every_service_take_every_event() -> None:
    registry = dataclasses.replace(load_registry(REGISTRIES / "orders.yaml"), projections=False)
    events = {e.name for e in registry.events}
    assert all(p.whole and p.events == events for p in project(registry).values())
