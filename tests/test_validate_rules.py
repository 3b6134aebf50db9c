"""The stricter validator rules: close-match hints, case-folded name collisions, one type
for the saga key, patterns the generated code's regex engine accepts and matches in linear
time, and a hint for YAML 1.1 booleans where a name was meant."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from saga_registry.registry import RegistryInvalid, load_registry
from tests.helpers import line_of, orders_data, write_yaml


def problems_of(path: Path) -> list[str]:
    with pytest.raises(RegistryInvalid) as info:
        load_registry(path)
    return [str(p) for p in info.value.problems]


def mutated(tmp_path: Path, change: Any) -> Path:
    data = orders_data()
    change(data)
    return write_yaml(tmp_path / "saga.yaml", data)


def rename_key(mapping: dict[str, Any], old: str, new: str) -> None:
    """Rename `old` to `new` in place, keeping the order of keys."""
    items = [(new if k == old else k, v) for k, v in mapping.items()]
    mapping.clear()
    mapping.update(items)


# -- did you mean ---------------------------------------------------------------------------


def test_reaction_to_a_misspelt_event_suggests_the_event(tmp_path: Path) -> None:
    path = mutated(
        tmp_path,
        lambda d: rename_key(
            d["services"]["Logistics"]["reacts"], "PaymentSucceeded", "PaymentSucceded"
        ),
    )
    problems = problems_of(path)
    line = line_of(path, "PaymentSucceded:")
    assert any(
        p.startswith(f"{path}:{line}:")
        and "unknown event 'PaymentSucceded' (did you mean 'PaymentSucceeded'?)" in p
        for p in problems
    ), problems


def test_misspelt_producer_suggests_the_service(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["events"]["PaymentFailed"].update(producer="Paymnt"))
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:{line_of(path, 'producer: Paymnt')}:")
        and "unknown service 'Paymnt' (did you mean 'Payment'?)" in p
        for p in problems
    ), problems


def test_misspelt_state_in_a_transition_suggests_the_state(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["state_machine"]["transitions"][0].update(to="reservd"))
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:{line_of(path, 'to: reservd')}:")
        and "unknown state 'reservd' (did you mean 'reserved'?)" in p
        for p in problems
    ), problems


def test_misspelt_state_in_a_deadline_suggests_the_state(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["state_machine"]["deadlines"][0].update(state="payd"))
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:{line_of(path, 'state: payd')}:")
        and "unknown state 'payd' (did you mean 'paid'?)" in p
        for p in problems
    ), problems


def test_misspelt_ref_suggests_the_definition(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["events"]["InventoryReserved"]["payload"]["properties"]["total"] = {"$ref": "Mony"}

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:{line_of(path, 'Mony')}:")
        and "$ref 'Mony' names no definition (did you mean 'Money'?)" in p
        for p in problems
    ), problems


def test_misspelt_key_suggests_the_known_key(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["events"]["OrderCreated"].update(descripton="x"))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'descripton:')}:")
    assert "unknown key 'descripton' in events.OrderCreated (did you mean 'description'?" in problem


def test_a_name_far_from_every_known_one_gets_no_suggestion(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["events"]["PaymentFailed"].update(producer="Zzzz"))
    problems = problems_of(path)
    (problem,) = [p for p in problems if "unknown service 'Zzzz'" in p]
    assert "did you mean" not in problem


# -- names that collide once case-folded ----------------------------------------------------


def test_services_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["services"]["Orderhistory"] = {"reacts": {"OrderCreated": {"emits": []}}}

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:{line_of(path, 'Orderhistory:')}:")
        and "service 'Orderhistory' and 'OrderHistory'" in p
        and "database" in p
        for p in problems
    ), problems


def test_events_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["events"]["Paymentfailed"] = d["events"]["PaymentFailed"]
        d["services"]["OMS"]["reacts"]["Paymentfailed"] = {"emits": []}
        d["services"]["Payment"]["reacts"]["InventoryReserved"]["emits"].append("Paymentfailed")
        d["state_machine"]["transitions"].append(
            {"on": "Paymentfailed", "from": "reserved", "to": "cancelled"}
        )

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    assert any(
        # The first `Paymentfailed:` is the OMS reaction; the second, the event.
        p.startswith(f"{path}:{line_of(path, 'Paymentfailed:', occurrence=2)}:")
        and "event 'Paymentfailed' and 'PaymentFailed' differ only in case" in p
        for p in problems
    ), problems


# -- the saga key ---------------------------------------------------------------------------


def test_saga_key_with_two_types_is_refused_naming_both_events(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        props = d["events"]["PaymentFailed"]["payload"]["properties"]
        props["order_id"] = {"type": "integer"}

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    assert any(
        "the saga key 'order_id' is integer in 'PaymentFailed' but string in 'OrderCreated'" in p
        for p in problems
    ), problems


# -- patterns -------------------------------------------------------------------------------


def _with_pattern(d: dict[str, Any], pattern: str) -> None:
    d["definitions"]["Code"] = {"type": "string", "pattern": pattern}
    d["events"]["DeliveryFailed"]["payload"]["properties"]["reason"] = {"$ref": "Code"}


def test_look_ahead_pattern_is_refused_at_the_pattern(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: _with_pattern(d, "^(?=a)a$"))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, '(?=a)')}:")
    assert "look-around" in problem
    assert "regex engine of the generated code" in problem


def test_back_reference_pattern_is_refused(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: _with_pattern(d, r"^(a)\1$"))
    (problem,) = problems_of(path)
    assert "backreferences are not supported" in problem


def test_catastrophic_pattern_on_a_deadline_payload_is_checked_quickly(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        _with_pattern(d, "^(a+)+$")
        # The deadline on `paid` emits DeliveryFailed: its reason meets the pattern.
        deadline = d["state_machine"]["deadlines"][0]
        assert deadline["emit"] == "DeliveryFailed"
        deadline["payload"] = {"reason": "a" * 60 + "b"}

    path = mutated(tmp_path, change)
    started = time.monotonic()
    problems = problems_of(path)
    elapsed = time.monotonic() - started
    # A backtracking matcher needs about 2**60 steps here; a linear one, microseconds.
    assert elapsed < 5, elapsed
    (problem,) = problems
    assert "deadline payload for 'DeliveryFailed': reason:" in problem
    assert "does not match" in problem


def test_deadline_payload_meeting_a_pattern_is_accepted(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        _with_pattern(d, r"^\p{L}+$")  # a class the Rust engine knows and Python's does not
        d["state_machine"]["deadlines"][0]["payload"] = {"reason": "délai"}

    load_registry(mutated(tmp_path, change))


# -- YAML 1.1 booleans ----------------------------------------------------------------------


def test_on_key_of_a_transition_is_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    text = write_yaml(path, orders_data()).read_text(encoding="utf-8")
    # safe_dump quotes the key; write it unquoted as people do.
    path.write_text(text.replace("'on':", "on:"), encoding="utf-8")
    assert "\n  - on: OrderCreated" in path.read_text(encoding="utf-8")
    load_registry(path)


def test_unquoted_on_where_a_name_is_expected_gets_a_hint(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        rename_key(d["state_machine"]["states"], "paid", "on")
        for t in d["state_machine"]["transitions"]:
            t["to"] = "on" if t["to"] == "paid" else t["to"]
            if t["from"] == "paid":
                t["from"] = "on"
        for x in d["state_machine"]["deadlines"]:
            x["state"] = "on" if x["state"] == "paid" else x["state"]

    path = tmp_path / "saga.yaml"
    data = orders_data()
    change(data)
    text = write_yaml(path, data).read_text(encoding="utf-8")
    path.write_text(text.replace("to: 'on'", "to: on"), encoding="utf-8")
    problems = problems_of(path)
    line = line_of(path, "to: on")
    assert any(
        p.startswith(f"{path}:{line}:")
        and "to: `on` was read as true: YAML 1.1 reads an unquoted on as a boolean; "
        'write it as "on"'
        in p
        for p in problems
    ), problems


def test_unquoted_off_in_a_list_of_states_gets_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    text = write_yaml(path, orders_data()).read_text(encoding="utf-8")
    path.write_text(text.replace("from: paid", "from: [off, paid]", 1), encoding="utf-8")
    problems = problems_of(path)
    assert any(
        p.startswith(f"{path}:{line_of(path, 'from: [off, paid]')}:")
        and "from.0: `off` was read as false: YAML 1.1 reads an unquoted off as a boolean; "
        'write it as "off"'
        in p
        for p in problems
    ), problems


def test_misspelt_constraint_in_a_field_suggests_the_constraint(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["definitions"]["Money"]["minimun"] = d["definitions"]["Money"].pop("minimum")

    path = mutated(tmp_path, change)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'minimun:')}:")
    assert "unknown key 'minimun' in definitions.Money (did you mean 'minimum'?" in problem


def test_misspelt_required_name_suggests_the_field(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["events"]["PaymentFailed"]["payload"]["required"].append("reasn")

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    assert any(
        "required field 'reasn' is not in properties (did you mean 'reason'?)" in p
        for p in problems
    ), problems


def test_deadline_payload_giving_the_saga_key_is_refused(tmp_path: Path) -> None:
    path = mutated(
        tmp_path, lambda d: d["state_machine"]["deadlines"][0]["payload"].update(order_id="o-1")
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'order_id: o-1')}:")
    assert "gives the saga key 'order_id': leave it out, the engine fills it in" in problem


# -- deferred answers and their deadlines -----------------------------------------------------


def test_a_deferred_answer_and_its_deadline_must_come_from_one_service(tmp_path: Path) -> None:
    """The late answer and the deadline exclude each other by taking one timer row in the
    deferring service's database; a deadline fired by another service would let both
    count."""
    blank = Path(__file__).parents[1] / "saga_registry/scaffold/blank/registry/saga.yaml"
    text = blank.read_text(encoding="utf-8")
    for old, new in (
        (
            "      AccountFailed: {emits: [ChargeRefunded]}\n",
            "      AccountFailed: {emits: [ChargeRefunded]}\n"
            "      ChargeExpired: {emits: [ChargeRefunded]}\n",
        ),
        (
            "  ChargeRefunded:\n    kind: compensation\n",
            "  ChargeExpired:\n    kind: failure\n    producer: Billing\n"
            "    stage: {en: The charge expired}\n    payload:\n      required: [signup_id]\n"
            "      properties:\n        signup_id: {$ref: Id}\n"
            "  ChargeRefunded:\n    kind: compensation\n",
        ),
        (
            '    - {"on": AccountFailed, from: charged, to: account_failed}\n',
            '    - {"on": AccountFailed, from: charged, to: account_failed}\n'
            '    - {"on": ChargeExpired, from: charged, to: account_failed}\n',
        ),
        (
            "      emit: AccountFailed\n      payload: {reason: timeout}\n",
            "      emit: ChargeExpired\n",
        ),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "saga.yaml"
    path.write_text(text, encoding="utf-8")
    line = line_of(path, "defer: true")
    assert problems_of(path) == [
        f"{path}:{line}:9: 'Accounts' may defer "
        "its reaction to 'CardCharged', but the deadline on 'charged' emits 'ChargeExpired', "
        "which 'Billing' produces: a deferred answer and its deadline must be given by the "
        "same service, so that only one of them counts"
    ]


def test_a_constrained_saga_key_does_not_fail_deadline_payloads(tmp_path: Path) -> None:
    """The engine fills in the key of a deadline's event with the saga's own: the payload
    is checked without it, whatever the key's own constraints."""

    def constrain(data: dict[str, Any]) -> None:
        data["definitions"]["Id"] = {"type": "string", "pattern": "^o-[0-9]+$", "minLength": 12}

    load_registry(mutated(tmp_path, constrain))
