"""`saga validate`: structure and meaning errors, each with path:line:col."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from saga_registry.cli.main import main
from saga_registry.registry import RegistryInvalid, RegistryNotFound, load_registry
from tests.helpers import ORDERS, line_of, orders_data, write_yaml


def problems_of(path: Path) -> list[str]:
    with pytest.raises(RegistryInvalid) as info:
        load_registry(path)
    return [str(p) for p in info.value.problems]


def mutated(tmp_path: Path, change: Any) -> Path:
    data = orders_data()
    change(data)
    return write_yaml(tmp_path / "saga.yaml", data)


def test_checkout_registry_is_valid_and_cli_exits_zero() -> None:
    result = CliRunner().invoke(main, ["validate", str(ORDERS)])
    assert result.exit_code == 0, result.output
    assert "10 events (4 domain, 3 failure, 3 compensation), 6 services" in result.output


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    path.write_text("version: 1\nsaga:\n  name: [unclosed\n  key: order_id\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:4:")
    assert "YAML syntax" in problem


def test_unknown_key_is_reported_at_its_line(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["events"]["OrderCreated"].update(colour="red"))
    (problem,) = problems_of(path)
    assert problem == (
        f"{path}:{line_of(path, 'colour:')}:5: unknown key 'colour' in events.OrderCreated "
        "(expected one of: description, kind, payload, producer, stage, undoes, upcast, version)"
    )


def test_wrong_type_is_reported_at_the_value(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["topics"]["events"].update(partitions="six"))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'partitions: six')}:")
    assert "topics.events.partitions: expected integer, got str" in problem


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = mutated(tmp_path, lambda d: d["events"]["PaymentFailed"].update(kind="oops"))
    (problem,) = problems_of(path)
    assert "events.PaymentFailed.kind" in problem and "'oops' is not one of" in problem


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["services"]["Payment"]["reacts"]["InventoryReserved"]["emits"].append("Nope")
        d["events"]["DeliveryFailed"]["producer"] = "Ghost"
        d["state_machine"]["transitions"][0]["to"] = "nowhere"

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    # Each mistake is reported (the unknown producer also makes its emitters wrong).
    assert len(problems) >= 3, problems
    assert any("unknown event 'Nope'" in p for p in problems)
    assert any("produced by unknown service 'Ghost'" in p for p in problems)
    assert any("unknown state 'nowhere'" in p for p in problems)


def test_dangling_reaction_reference_names_its_line(tmp_path: Path) -> None:
    path = mutated(
        tmp_path, lambda d: d["services"]["Logistics"]["reacts"].update(Teleported={"emits": []})
    )
    (problem,) = problems_of(path)
    assert problem == f"{path}:{line_of(path, 'Teleported:')}:7: unknown event 'Teleported'"


def test_event_consumed_but_never_produced(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        # Nobody emits RefundSucceeded any more, but Inventory and OrderHistory react to it.
        d["services"]["Payment"]["reacts"]["DeliveryFailed"]["emits"] = []

    problems = problems_of(mutated(tmp_path, change))
    assert any(
        "'Inventory' reacts to 'RefundSucceeded', which is consumed but never produced" in p
        for p in problems
    ), problems


def test_event_produced_but_unconsumed_and_not_terminal(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        del d["services"]["Inventory"]["reacts"]["RefundSucceeded"]
        del d["services"]["OrderHistory"]["reacts"]["RefundSucceeded"]

    problems = problems_of(mutated(tmp_path, change))
    assert any(
        "'RefundSucceeded' is produced but no service reacts to it, and it does not end the saga"
        in p
        for p in problems
    ), problems


def test_unreachable_state(tmp_path: Path) -> None:
    path = mutated(
        tmp_path, lambda d: d["state_machine"]["states"].update(limbo={"description": "x"})
    )
    problems = problems_of(path)
    assert (
        f"{path}:{line_of(path, 'limbo:')}:5: state 'limbo' is unreachable from the initial "
        "state 'new'" in problems
    )


def test_state_with_no_way_to_a_terminal_state(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["state_machine"]["transitions"] = [
            t for t in d["state_machine"]["transitions"] if t["on"] != "OrderCancelled"
        ]
        d["state_machine"]["transitions"].append(
            {"on": "OrderCancelled", "from": "stock_failed", "to": "released"}
        )

    problems = problems_of(mutated(tmp_path, change))
    assert any("state 'released' has no way to a terminal state" in p for p in problems)


def test_failure_without_compensation_path_is_refused(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        # A stock failure that "cancels" through a domain event only: no compensation.
        d["state_machine"]["transitions"] = [
            {"on": t["on"], "from": t["from"], "to": "completed"}
            if t["on"] == "InventoryReservationFailed"
            else t
            for t in d["state_machine"]["transitions"]
        ]

    path = mutated(tmp_path, change)
    problems = problems_of(path)
    line = line_of(path, "'on': InventoryReservationFailed")
    assert any(
        p.startswith(f"{path}:{line}:")
        and "failure 'InventoryReservationFailed' leads to state 'completed' with no "
        "compensation path to a terminal state"
        in p
        for p in problems
    ), problems


def test_reaction_emitting_another_services_event(tmp_path: Path) -> None:
    path = mutated(
        tmp_path,
        lambda d: d["services"]["Logistics"]["reacts"]["PaymentSucceeded"]["emits"].append(
            "RefundSucceeded"
        ),
    )
    problems = problems_of(path)
    assert any(
        "reaction of 'Logistics' to 'PaymentSucceeded' emits 'RefundSucceeded', an event of "
        "service 'Payment'" in p
        for p in problems
    ), problems


def test_duplicate_event_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    text = ORDERS.read_text(encoding="utf-8")
    marker = "  InventoryReserved:\n    kind: domain"
    path.write_text(text.replace(marker, "  OrderCreated:\n    kind: domain", 1))
    problems = problems_of(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    first, second = [n for n, line in enumerate(lines, 1) if line == "  OrderCreated:"]
    assert problems == [
        f"{path}:{second}:3: duplicate key 'OrderCreated' (first defined at line {first})"
    ]


def test_name_shared_by_an_event_and_a_service_is_refused(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["services"]["OrderCreated"] = {"description": "clash"}

    problems = problems_of(mutated(tmp_path, change))
    assert any("name 'OrderCreated' is already used at line" in p for p in problems)


@pytest.mark.parametrize(
    ("section", "bad"),
    [("events", "order-created"), ("services", "lower"), ("events", "class")],
)
def test_names_must_be_identifiers(tmp_path: Path, section: str, bad: str) -> None:
    def change(d: dict[str, Any]) -> None:
        d[section][bad] = d[section].pop("OrderCreated" if section == "events" else "Cart")

    problems = problems_of(mutated(tmp_path, change))
    assert any(f"name {bad!r} is not a valid name" in p for p in problems), problems


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryNotFound, match="no such file"):
        load_registry(tmp_path / "absent.yaml")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'absent.yaml'}: no such file"


def test_cli_prints_each_problem_as_path_line_col_and_exits_one(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["events"]["OrderCreated"]["producer"] = "Ghost"
        d["events"]["OrderCreated"]["kind"] = "weird"

    path = mutated(tmp_path, change)
    # Structure errors come first: the kind is caught, the meaning check waits for it.
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"{path}:{line_of(path, 'kind: weird')}:")
    assert lines[-1] == f"{path}: 1 problem; the registry is not valid"


def test_python_tags_are_refused_by_the_safe_loader(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    path.write_text(
        "version: 1\nsaga: !!python/object/apply:os.system ['touch pwned']\n", encoding="utf-8"
    )
    (problem,) = problems_of(path)
    assert (
        problem == f"{path}:2:7: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' "
        "is not allowed"
    )
    assert not (tmp_path / "pwned").exists()


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    (problem,) = problems_of(path)
    assert "expands to more than 500000 values" in problem


# -- regressions found by tests/test_loader_properties.py: each input once crashed the
# loader with a traceback or gave an error without a place.


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2023-02-30", "YAML: '2023-02-30' is not a valid timestamp"),  # ValueError
        ("2001-12-14t21:59:43.10-99:00", "is not a valid timestamp"),  # ValueError
        ("1" + "0" * 5000, "is not a valid int"),  # ValueError: over 4300 digits
        ("1:" * 200 + "0.5", "is not a valid float"),  # OverflowError
        ("!!int abc", "YAML: 'abc' is not a valid int"),  # ValueError
        ("!!float ''", "YAML: '' is not a valid float"),  # IndexError
        ("!!bool maybe", "YAML: 'maybe' is not a valid bool"),  # KeyError
        ("!!timestamp soon", "YAML: 'soon' is not a valid timestamp"),  # AttributeError
    ],
)
def test_value_that_does_not_fit_its_type_is_a_problem(
    tmp_path: Path, value: str, message: str
) -> None:
    path = tmp_path / "saga.yaml"
    text = ORDERS.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  title: Order checkout (saga choreography)", f"  title: {value}")
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'title:')}:10: ")
    assert message in problem


def test_control_character_is_reported_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    path.write_text("version: 1\nsaga:\n  name: ché\x00ckout\n", encoding="utf-8")
    # It was `path:1:1: YAML: unacceptable character #x0000: ...` and a second line without
    # a place: `  in "<unicode string>", position 21`.
    assert problems_of(path) == [f"{path}:3:12: YAML: control characters are not allowed: '\\x00'"]


def test_file_that_is_not_utf8_is_invalid_at_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    path.write_bytes(b"version: 1\nsaga:\n  title: ch\xc3\xa9\xffckout\n")
    # It was RegistryNotFound, `path: cannot read: 'utf-8' codec can't decode ...`.
    assert problems_of(path) == [f"{path}:3:13: not UTF-8 text: byte 0xff (invalid start byte)"]


def test_key_with_line_breaks_is_reported_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    text = ORDERS.read_text(encoding="utf-8")
    path.write_text(text.replace("  title:", '  "ti\\ntle\\u2028":', 1), encoding="utf-8")
    line = line_of(path, '"ti')
    # The key's line breaks used to split the problem over three lines, two without a place.
    assert problems_of(path) == [
        f"{path}:{line}:3: unknown key 'ti\\ntle\\u2028' in saga "
        "(expected one of: description, key, name, pattern, projections, signed_events, title)"
    ]


def test_too_deep_nesting_is_a_problem_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    deep = "{type: array, items: " * 400 + "{type: string}" + "}" * 400
    text = ORDERS.read_text(encoding="utf-8")
    path.write_text(text.replace("detail: {type: string, maxLength: 500}", f"detail: {deep}", 1))
    problems = problems_of(path)
    line = line_of(path, "detail: {type: array")
    assert problems and all(
        p.startswith(f"{path}:{line}:") and p.endswith(": nested deeper than 100 levels")
        for p in problems
    ), problems


def test_ref_to_a_definition_without_a_type_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "saga.yaml"
    text = ORDERS.read_text(encoding="utf-8")
    path.write_text(text.replace("  Currency:\n    type: string\n", "  Currency:\n", 1))
    problems = problems_of(path)
    # It was a KeyError: 'type'. The problem is at the definition, once per reference.
    assert set(problems) == {
        f"{path}:{line_of(path, 'Currency:')}:3: a field needs a type (or a $ref to a definition)"
    }


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("[", "unterminated character set at position 0"),  # re.error out of the checks
        ("a{4294967296}", "the repetition number is too large"),  # OverflowError
        ("(" * 1000 + ")" * 1000, "groups nested too deeply"),  # RecursionError
    ],
)
def test_pattern_that_is_not_a_regex_is_a_problem(tmp_path: Path, pattern: str, error: str) -> None:
    # `detail` is in the payload of the deadline's DeliveryFailed, which the meaning
    # checks validate with the field's pattern.
    path = mutated(
        tmp_path,
        lambda d: d["events"]["DeliveryFailed"]["payload"]["properties"]["detail"].update(
            pattern=pattern
        ),
    )
    (problem,) = problems_of(path)
    line = line_of(path, "pattern: ", occurrence=2)  # the first is saga.pattern
    assert problem.startswith(f"{path}:{line}:")
    assert problem.endswith(f": pattern is not a regex: {error}")


@pytest.mark.parametrize("within_s", [10**400, float("inf"), float("nan")])
def test_deadline_must_be_a_finite_number_of_seconds(tmp_path: Path, within_s: float) -> None:
    # 10**400 was an OverflowError.
    path = mutated(tmp_path, lambda d: d["state_machine"]["deadlines"][0].update(within_s=within_s))
    assert problems_of(path) == [
        f"{path}:{line_of(path, 'within_s:')}:15: state_machine.deadlines.0.within_s: "
        "expected a finite number of seconds"
    ]
