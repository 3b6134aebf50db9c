"""`saga check`: the shipped registries are proved sound over every run the engine can
produce; each broken registry under tests/registries/broken/ trips exactly its one rule,
with the shortest run that breaks it as the counterexample."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from saga_registry.checker.explore import explore
from saga_registry.checker.rules import RULES, check_all
from saga_registry.cli.main import main
from saga_registry.registry import load_registry
from tests.helpers import CHECKOUT, ORDERS, ROOT, TRIP

BROKEN = ROOT / "tests" / "registries" / "broken"
BLANK = ROOT / "saga_registry" / "scaffold" / "blank" / "registry" / "saga.yaml"
SOUND = {"checkout": CHECKOUT, "orders": ORDERS, "trip_booking": TRIP, "blank": BLANK}


def _check(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["check", *args], env=env)


def _json(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = _check("--registry", str(path), "--json", *args)
    return result.exit_code, json.loads(result.output)


@pytest.mark.parametrize("name", sorted(SOUND))
def test_the_shipped_registries_are_proved_over_every_run(name: str) -> None:
    result = _check("--registry", str(SOUND[name]))
    assert result.exit_code == 0, result.output
    assert "every run explored" in result.output
    for rule in RULES:
        assert re.search(rf"^{rule} +proved: ", result.output, re.M), result.output


def test_the_checkout_is_explored_in_well_under_a_second() -> None:
    found = explore(load_registry(str(CHECKOUT)))
    # Its five runs: completed, and cancelled after the stock, the payment, or the
    # delivery failing (by Logistics' answer or by its deadline).
    assert found.runs() == 5
    assert not found.bound_hit
    assert found.seconds < 1.0


# Each broken registry: the rule it breaks (its file name) and its counterexample, as
# (event, applied?) in log order.
BROKEN_PATHS = {
    "terminates": [("Submitted", True), ("Escalated", True)],
    "compensated": [
        ("OrderPlaced", True),
        ("PaymentTaken", True),
        ("ParcelLost", True),
        ("OrderCancelled", True),
    ],
    "acts_only_when_allowed": [
        ("OrderCreated", True),
        ("OrderRejected", True),
        ("InventoryReserved", False),
    ],
    "reachable": None,  # no run: what no run reaches
}


def test_there_is_one_broken_registry_per_rule() -> None:
    assert sorted(p.stem for p in BROKEN.glob("*.yaml")) == sorted(RULES) == sorted(BROKEN_PATHS)


@pytest.mark.parametrize("rule", sorted(BROKEN_PATHS))
def test_each_broken_registry_trips_exactly_its_rule(rule: str) -> None:
    path = BROKEN / f"{rule}.yaml"
    assert _check("--registry", str(path)).exit_code == 1
    code, doc = _json(path)
    assert code == 1 and doc["ok"] is False
    statuses = {r["rule"]: r["status"] for r in doc["rules"]}
    assert statuses == {r: ("violated" if r == rule else "proved") for r in RULES}
    (broken,) = [r for r in doc["rules"] if r["rule"] == rule]
    expected = BROKEN_PATHS[rule]
    if expected is None:
        assert broken["counterexample"] is None
        assert broken["detail"] == "never reached on any run: state expired, event TimedOut"
        return
    steps = broken["counterexample"]["steps"]
    assert [(s["event"], not s["skipped"]) for s in steps] == expected


def test_a_counterexample_reads_as_numbered_steps_and_what_went_wrong() -> None:
    result = _check("--registry", str(BROKEN / "compensated.yaml"))
    text = result.output.split("counterexample to compensated (4 events):\n", 1)[1]
    assert text.splitlines() == [
        "  1.  OrderPlaced     Shop begins the saga                new -> placed",
        "  2.  PaymentTaken    Payment, reacting to OrderPlaced    placed -> paid",
        "  3.  ParcelLost      Shipping, reacting to PaymentTaken  paid -> lost",
        "  4.  OrderCancelled  Shop, reacting to ParcelLost        lost -> cancelled",
        "  => the saga ended in cancelled (failure) with effects never undone: "
        "PaymentTaken (undone by PaymentRefunded)",
    ]


def test_a_skipped_step_says_where_it_landed() -> None:
    result = _check("--registry", str(BROKEN / "acts_only_when_allowed.yaml"))
    assert (
        "3.  InventoryReserved  Inventory, reacting to OrderCreated  "
        "rejected: skipped, not allowed there" in result.output
    )
    assert "after the saga moved on to rejected" in result.output


def test_the_waiting_state_of_a_stuck_saga_is_named() -> None:
    code, doc = _json(BROKEN / "terminates.yaml")
    assert code == 1
    (rule,) = [r for r in doc["rules"] if r["rule"] == "terminates"]
    assert rule["counterexample"]["state"] == "review"
    assert rule["detail"] == "the saga is stuck in state review: nothing still owed moves it on"


@pytest.mark.usefixtures("dot_installed")
def test_the_counterexample_is_drawn_as_dot_and_svg(tmp_path: Path) -> None:
    dot, svg = tmp_path / "c.dot", tmp_path / "c.svg"
    result = _check(
        "--registry", str(BROKEN / "compensated.yaml"), "--dot", str(dot), "--svg", str(svg)
    )
    assert result.exit_code == 1
    source = dot.read_text("utf-8")
    # The run's transitions numbered in log order; the ones it did not take grey.
    for label in ("1. OrderPlaced", "2. PaymentTaken", "3. ParcelLost", "4. OrderCancelled"):
        assert f'label="{label}"' in source
    assert 'label=Shipped color="#cccccc"' in source
    assert "saga breaking compensated: cancelled" in source
    root = ElementTree.parse(svg).getroot()  # what the real `dot` wrote
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"3. ParcelLost", "cancelled"} <= texts


def test_nothing_is_drawn_when_every_rule_holds(tmp_path: Path) -> None:
    dot = tmp_path / "c.dot"
    result = _check("--registry", str(ORDERS), "--dot", str(dot))
    assert result.exit_code == 0
    assert not dot.exists()


def test_svg_without_dot_is_one_error_line(tmp_path: Path) -> None:
    svg = tmp_path / "c.svg"
    result = _check("--registry", str(ORDERS), "--svg", str(svg), env={"PATH": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output == f"error: --svg {svg}: Graphviz 'dot' is not installed\n"


def test_a_missing_registry_is_one_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = _check(env={"SAGA_REGISTRY": str(missing)})
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {missing}")
    assert len(result.output.splitlines()) == 1


def test_a_run_cut_by_the_bound_is_reported_not_proved() -> None:
    result = _check("--registry", str(ORDERS), "--max-events", "3")
    assert result.exit_code == 0  # nothing violated within the bound
    assert "bound of 3 events HIT" in result.output
    assert re.search(r"^terminates +bounded: .*\(runs up to 3 events\)$", result.output, re.M)
    assert "proved" not in result.output


def test_a_deferred_answer_and_its_deadline_exclude_each_other() -> None:
    # On the orders registry both Logistics' deferred answer and its deadline on `paid`
    # are explored, and never both: no late answer lands after the deadline's event.
    found = explore(load_registry(str(ORDERS)))
    hows = {(m.event, m.how) for moves in found.moves.values() for m, _ in moves}
    assert {("DeliveryFailed", "deadline"), ("DeliveryScheduled", "answered")} <= hows
    verdicts = {v.rule: v.status for v in check_all(found)}
    assert verdicts["acts_only_when_allowed"] == "proved"
    assert all(m.applied for moves in found.moves.values() for m, _ in moves)


def test_a_deferred_answer_racing_another_service_is_a_late_answer(tmp_path: Path) -> None:
    # OMS may also cancel a paid order: Logistics' timer does not stop that, so its
    # answer can land after the saga moved on.
    text = ORDERS.read_text("utf-8")
    text = text.replace(
        "      DeliveryScheduled:\n        emits: []\n",
        "      DeliveryScheduled:\n        emits: []\n      PaymentSucceeded:\n"
        "        emits: [OrderCancelled]\n",
        1,
    )
    text = text.replace(
        "{on: OrderCancelled, from: [stock_failed, released]",
        "{on: OrderCancelled, from: [stock_failed, released, paid]",
    )
    path = tmp_path / "race.yaml"
    path.write_text(text, "utf-8")
    code, doc = _json(path)
    assert code == 1
    (rule,) = [r for r in doc["rules"] if r["rule"] == "acts_only_when_allowed"]
    last = rule["counterexample"]["steps"][-1]
    assert (last["event"], last["how"], last["source"], last["skipped"]) == (
        "DeliveryScheduled",
        "answered",
        "cancelled",
        True,
    )
    events = [s["event"] for s in rule["counterexample"]["steps"]]
    assert events == [
        "OrderCreated",
        "InventoryReserved",
        "PaymentSucceeded",
        "OrderCancelled",
        "DeliveryScheduled",
    ]


def test_an_initiating_event_the_machine_takes_later_may_come_at_any_time(
    tmp_path: Path,
) -> None:
    # The author may withdraw a document while it is screened or reviewed: explored as
    # an event emitted once at any moment, never owed (so it rescues no stuck saga); a
    # withdrawal landing first makes the screening's verdict arrive too late.
    text = (BROKEN / "terminates.yaml").read_text("utf-8")
    text = text.replace("initiates: [Submitted]", "initiates: [Submitted, Withdrawn]")
    text = text.replace(
        "  Approved:\n",
        "  Withdrawn:\n    {kind: domain, producer: Desk, stage: {en: Withdrawn}, "
        "payload: {required: [doc_id], properties: {doc_id: {type: string}}}}\n  Approved:\n",
    )
    text = text.replace(
        "    approved: {terminal: true, outcome: success}\n",
        "    approved: {terminal: true, outcome: success}\n"
        "    withdrawn: {terminal: true, outcome: success}\n",
    )
    text += "    - {on: Withdrawn, from: [screening, review], to: withdrawn}\n"
    path = tmp_path / "withdraw.yaml"
    path.write_text(text, "utf-8")
    found = explore(load_registry(str(path)))
    late = [m for moves in found.moves.values() for m, _ in moves if m.event == "Withdrawn"]
    assert {m.source for m in late} >= {"screening", "review", "approved"}
    verdicts = {v.rule: v for v in check_all(found)}
    assert verdicts["reachable"].status == "proved"
    assert verdicts["terminates"].status == "violated"
    example = verdicts["acts_only_when_allowed"].counterexample
    assert example is not None
    assert [(m.event, m.how, m.target) for m in example.steps] == [
        ("Submitted", "initiated", "screening"),
        ("Withdrawn", "initiated", "withdrawn"),
        ("Flagged", "reacted", None),
    ]


def test_a_deadline_that_can_never_fire_is_noted() -> None:
    # trip_booking's services answer at once, leaving the state with what they emit, so
    # the engine never arms its deadlines' timers; the checkout's is armed (Logistics
    # defers) and fires on some run.
    code, doc = _json(TRIP)
    assert code == 0
    assert doc["notes"] == [
        "deadline requested.FlightBookingFailed (FlightBookingFailed after 120 s) fires on "
        "no run: Flights answers every event entering requested at once with one that "
        "leaves it, so no timer is ever armed",
        "deadline car_rented.PaymentDeclined (PaymentDeclined after 300 s) fires on no run: "
        "Billing answers every event entering car_rented at once with one that leaves it, "
        "so no timer is ever armed",
    ]
    assert _json(ORDERS)[1]["notes"] == []


PING_PONG = """\
version: 1
saga: {name: loop, title: Ping-pong, key: id}
topics:
  events: {name: loop.events, partitions: 1}
  dead_letter: {name: loop.events.dlq, partitions: 1}
services:
  Starter:
    description: Starts.
    initiates: [Start]
  Ping:
    description: Pings.
    reacts:
      Start: {emits: [Go, Finish]}
      Back: {emits: [Go]}
  Pong:
    description: Pongs.
    reacts:
      Go: {emits: [Back]}
events:
  Start:
    {kind: domain, producer: Starter, stage: {en: Start},
      payload: {required: [id], properties: {id: {type: string}}}}
  Go:
    {kind: domain, producer: Ping, stage: {en: Go},
      payload: {required: [id], properties: {id: {type: string}}}}
  Back:
    {kind: domain, producer: Pong, stage: {en: Back},
      payload: {required: [id], properties: {id: {type: string}}}}
  Finish:
    {kind: domain, producer: Ping, stage: {en: Finish},
      payload: {required: [id], properties: {id: {type: string}}}}
state_machine:
  initial: new
  states:
    new: {}
    a: {}
    b: {}
    done: {terminal: true, outcome: success}
  transitions:
    - {on: Start, from: new, to: a}
    - {on: Go, from: a, to: b}
    - {on: Back, from: b, to: a}
    - {on: Finish, from: a, to: done}
"""


def test_a_loop_without_exit_is_a_violation_though_validate_accepts_it(tmp_path: Path) -> None:
    # Ping may finish only on its first turn; once it answered Go, Ping and Pong pass the
    # saga back and forth forever. The configurations are finite, so the bound is never
    # hit: the loop is found, not cut.
    path = tmp_path / "loop.yaml"
    path.write_text(PING_PONG, "utf-8")
    assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0
    code, doc = _json(path)
    assert code == 1
    assert doc["explored"]["runs"] is None and doc["explored"]["bound_hit"] is False
    (rule,) = [r for r in doc["rules"] if r["rule"] == "terminates"]
    assert rule["status"] == "violated"
    assert (
        rule["detail"]
        == "from state b no run reaches a terminal state: the saga loops without exit"
    )
    assert [s["event"] for s in rule["counterexample"]["steps"]] == ["Start", "Go"]


def test_the_configurations_bound_is_reported_not_proved() -> None:
    found = explore(load_registry(str(ORDERS)), max_configs=4)
    assert found.too_many and found.bound_hit
    assert len(found.depth) < 11  # the whole registry has 11
    assert {v.status for v in check_all(found)} == {"bounded"}


def test_the_checker_never_loads_the_engine() -> None:
    # It models the engine's semantics; importing the engine would tie the model to a
    # runtime (databases, buses) it has no use for.
    code = (
        "import sys\n"
        "from saga_registry.checker import check_all, explore\n"
        "from saga_registry.checker.counterexample import dot\n"
        "from saga_registry.registry import load_registry\n"
        f"found = explore(load_registry({str(BROKEN / 'compensated.yaml')!r}))\n"
        "(example,) = [v.counterexample for v in check_all(found) if v.counterexample]\n"
        "dot(found.world.registry, example)\n"
        "print(sorted(m for m in sys.modules if m.startswith('saga_registry.engine')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout == "[]\n"


def test_a_compensation_that_names_nothing_it_undoes_is_a_violation(tmp_path: Path) -> None:
    """Without `undoes`, no run has an effect to undo: `compensated` would hold of any
    registry, and removing the line would go unnoticed."""
    text = BLANK.read_text(encoding="utf-8")
    assert text.count("    undoes: [CardCharged]\n") == 1
    path = tmp_path / "saga.yaml"
    path.write_text(text.replace("    undoes: [CardCharged]\n", ""), encoding="utf-8")
    status, doc = _json(path)
    assert status == 1
    (verdict,) = [r for r in doc["rules"] if r["rule"] == "compensated"]
    assert verdict["status"] == "violated"
    assert verdict["detail"].startswith("ChargeRefunded: a compensation that names no event")
