"""`saga diff`: every kind of registry change gets its verdict (compatible or breaking, for
whom), a version raised with upcasts makes a payload change compatible, and the command
compares files and git revisions with distinct exit statuses; `saga codegen` prints the
summary when the registry changed since git's HEAD."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from saga_registry.cli.main import main
from saga_registry.registry import Registry, load_registry
from saga_registry.registry.diff import Change, diff_registries, summary
from saga_registry.registry.source import load_document
from tests.helpers import CHECKOUT

Data = dict[str, Any]


def checkout() -> Data:
    """The checkout registry as plain data, to edit (read as the loader reads it: PyYAML
    alone would turn the `on:` keys into True)."""
    data: Data = load_document(CHECKOUT).data
    return copy.deepcopy(data)


def registry(data: Data) -> Registry:
    """`data` loaded and validated as a registry."""
    return load_registry("edited.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def changes(
    edit: Callable[[Data], object], base: Callable[[Data], object] | None = None
) -> list[Change]:
    """The changes from the checkout (edited by `base` first) to it edited by `edit`."""
    old = checkout()
    if base is not None:
        base(old)
    new = copy.deepcopy(old)
    edit(new)
    return diff_registries(registry(old), registry(new))


def only(found: list[Change], code: str) -> Change:
    """The one change of `code` among `found`."""
    matching = [c for c in found if c.code == code]
    assert len(matching) == 1, [(c.code, c.where) for c in found]
    return matching[0]


def payload(data: Data, event: str) -> Data:
    """The payload of `event` in `data`."""
    body: Data = data["events"][event]["payload"]
    return body


def version(data: Data, event: str, upcast: Data) -> None:
    """Raise `event` to version 2 reading version 1 through `upcast`."""
    data["events"][event]["version"] = 2
    data["events"][event]["upcast"] = [{"from": 1, **upcast}]


# --- event consumers ------------------------------------------------------------------


def test_identical_registries_have_no_changes() -> None:
    found = changes(lambda d: None)
    assert found == []
    assert summary(found) == "no changes"


def test_texts_are_no_change() -> None:
    def edit(d: Data) -> None:
        d["events"]["OrderCreated"]["stage"]["en"] = "Another text"
        d["services"]["OMS"]["description"] = "Another description"

    assert changes(edit) == []


def _add_noted(d: Data) -> None:
    """An extra event: OMS emits OrderNoted on DeliveryScheduled; OrderHistory reads it."""
    d["events"]["OrderNoted"] = {
        "kind": "domain",
        "producer": "OMS",
        "stage": {"en": "The order is noted"},
        "payload": {"required": ["order_id"], "properties": {"order_id": {"$ref": "Id"}}},
    }
    d["services"]["OMS"]["reacts"]["DeliveryScheduled"]["emits"] = ["OrderNoted"]
    d["services"]["OrderHistory"]["reacts"]["OrderNoted"] = {"emits": []}
    d["state_machine"]["states"]["noted"] = {"terminal": True, "outcome": "success"}
    d["state_machine"]["transitions"].append(
        {"on": "OrderNoted", "from": "completed", "to": "noted"}
    )
    d["state_machine"]["states"]["completed"] = {}


def _remove_noted(d: Data) -> None:
    fresh = checkout()
    d.clear()
    d.update(fresh)


def test_event_removed_is_breaking_for_consumers() -> None:
    found = changes(_remove_noted, base=_add_noted)
    c = only(found, "event_removed")
    assert (c.where, c.breaking, c.for_whom) == ("OrderNoted", True, "consumers")
    assert "OrderHistory" in c.why
    assert found[0].breaking  # breaking changes come first


def test_event_added_is_compatible_when_consumers_deploy_first() -> None:
    c = only(changes(_add_noted), "event_added")
    assert (c.breaking, c.rollout) == (False, "consumers first")


def test_required_field_added_without_default_is_breaking() -> None:
    def edit(d: Data) -> None:
        payload(d, "PaymentFailed")["properties"]["code"] = {"type": "integer"}
        payload(d, "PaymentFailed")["required"].append("code")

    c = only(changes(edit), "field_required_added")
    assert (c.where, c.breaking, c.for_whom) == ("PaymentFailed.code", True, "consumers")
    assert "add `upcast: [{from: 1, default: {code: ...}}]`" in c.why


def test_required_field_added_with_version_and_default_is_compatible() -> None:
    def edit(d: Data) -> None:
        payload(d, "PaymentFailed")["properties"]["code"] = {"type": "integer"}
        payload(d, "PaymentFailed")["required"].append("code")
        version(d, "PaymentFailed", {"default": {"code": 0}})

    found = changes(edit)
    c = only(found, "field_required_added")
    assert (c.breaking, c.rollout) == (False, "consumers first")
    assert "code: 0" in c.why
    assert not only(found, "version_raised").breaking


def test_optional_field_added_is_compatible_when_consumers_deploy_first() -> None:
    def edit(d: Data) -> None:
        payload(d, "OrderCreated")["properties"]["note"] = {"type": "string"}

    c = only(changes(edit), "field_optional_added")
    assert (c.where, c.breaking, c.rollout) == ("OrderCreated.note", False, "consumers first")


def test_field_removed_is_breaking() -> None:
    def edit(d: Data) -> None:
        del payload(d, "PaymentFailed")["properties"]["detail"]

    c = only(changes(edit), "field_removed")
    assert (c.where, c.breaking, c.for_whom) == ("PaymentFailed.detail", True, "consumers")


def _rename_reason(d: Data) -> None:
    body = payload(d, "OrderCancelled")
    body["properties"]["why"] = body["properties"].pop("reason")
    body["required"] = ["order_id", "cause", "why"]


def test_field_renamed_is_one_change_and_breaking() -> None:
    found = changes(_rename_reason)
    c = only(found, "field_renamed")
    assert (c.where, c.breaking) == ("OrderCancelled.reason", True)
    assert not [x for x in found if x.code in ("field_removed", "field_required_added")]
    assert (
        "raise OrderCancelled's version to 2 and add `upcast: [{from: 1, rename: {reason: why}}]`"
        in c.why
    )


def test_field_renamed_with_version_and_upcast_is_compatible() -> None:
    def edit(d: Data) -> None:
        _rename_reason(d)
        version(d, "OrderCancelled", {"rename": {"reason": "why"}})

    found = changes(edit)
    assert not any(c.breaking for c in found), found
    assert only(found, "field_renamed").rollout == "consumers first"
    assert summary(found) == "2 changes: all compatible"


def test_version_raised_without_the_upcast_covering_a_rename_is_still_breaking() -> None:
    def edit(d: Data) -> None:
        _rename_reason(d)
        version(d, "OrderCancelled", {"rename": {"text": "cause"}})

    c = only(changes(edit), "field_renamed")
    assert c.breaking
    assert "add `rename: {reason: why}` to OrderCancelled's upcast from 1" in c.why


NARROWINGS: dict[str, Callable[[Data], None]] = {
    "type changed": lambda d: payload(d, "DeliveryScheduled")["properties"].update(
        eta_days={"type": "string"}
    ),
    "minimum raised": lambda d: payload(d, "DeliveryScheduled")["properties"]["eta_days"].update(
        minimum=1
    ),
    "maximum lowered": lambda d: payload(d, "DeliveryScheduled")["properties"]["eta_days"].update(
        maximum=30
    ),
    "maxLength lowered": lambda d: payload(d, "DeliveryScheduled")["properties"]["carrier"].update(
        maxLength=10
    ),
    "minLength raised": lambda d: payload(d, "DeliveryScheduled")["properties"]["carrier"].update(
        minLength=3
    ),
    "pattern added": lambda d: payload(d, "DeliveryScheduled")["properties"]["carrier"].update(
        pattern="^[a-z]+$"
    ),
    "enum added": lambda d: payload(d, "DeliveryScheduled")["properties"]["carrier"].update(
        enum=["dhl", "ups"]
    ),
    "minItems raised": lambda d: payload(d, "OrderCreated")["properties"]["items"].update(
        minItems=2
    ),
    "nested item narrowed": lambda d: payload(d, "OrderCreated")["properties"]["items"]["items"][
        "properties"
    ]["quantity"].update(maximum=99),
}


@pytest.mark.parametrize("edit", NARROWINGS.values(), ids=NARROWINGS.keys())
def test_narrowing_a_field_is_breaking(edit: Callable[[Data], None]) -> None:
    found = changes(edit)
    assert len(found) == 1, found
    assert found[0].code in ("type_changed", "type_narrowed")
    assert (found[0].breaking, found[0].for_whom) == (True, "consumers")


def test_nested_fields_are_named_by_their_path() -> None:
    c = changes(NARROWINGS["nested item narrowed"])[0]
    assert c.where == "OrderCreated.items[].quantity"


def _pattern(d: Data, pattern: str) -> None:
    payload(d, "DeliveryScheduled")["properties"]["carrier"]["pattern"] = pattern


def test_pattern_changed_is_breaking() -> None:
    c = changes(lambda d: _pattern(d, "^[A-Z]+$"), base=lambda d: _pattern(d, "^[a-z]+$"))[0]
    assert (c.code, c.breaking) == ("type_narrowed", True)


WIDENINGS: dict[str, Callable[[Data], None]] = {
    "maximum raised": lambda d: payload(d, "DeliveryScheduled")["properties"]["eta_days"].update(
        maximum=1000
    ),
    "minimum dropped": lambda d: payload(d, "DeliveryScheduled")["properties"]["eta_days"].pop(
        "minimum"
    ),
    "maxLength raised": lambda d: payload(d, "DeliveryScheduled")["properties"]["carrier"].update(
        maxLength=100
    ),
    "integer to number": lambda d: payload(d, "DeliveryScheduled")["properties"]["eta_days"].update(
        type="number"
    ),
}


@pytest.mark.parametrize("edit", WIDENINGS.values(), ids=WIDENINGS.keys())
def test_widening_a_field_is_compatible_when_consumers_deploy_first(
    edit: Callable[[Data], None],
) -> None:
    found = changes(edit)
    assert [(c.code, c.breaking, c.rollout) for c in found] == [
        ("type_widened", False, "consumers first")
    ]


def _require_detail(d: Data) -> None:
    payload(d, "PaymentFailed")["required"].append("detail")


def test_a_field_becoming_required_is_breaking() -> None:
    c = only(changes(_require_detail), "field_now_required")
    assert (c.where, c.breaking) == ("PaymentFailed.detail", True)


def test_a_field_becoming_required_with_an_upcast_default_is_compatible() -> None:
    def edit(d: Data) -> None:
        _require_detail(d)
        version(d, "PaymentFailed", {"default": {"detail": ""}})

    assert not only(changes(edit), "field_now_required").breaking


def test_a_field_becoming_optional_is_compatible_when_consumers_deploy_first() -> None:
    def edit(d: Data) -> None:
        payload(d, "DeliveryScheduled")["required"].remove("carrier")

    c = only(changes(edit), "field_now_optional")
    assert (c.breaking, c.rollout) == (False, "consumers first")


def _drop_timeout(d: Data) -> None:
    payload(d, "PaymentFailed")["properties"]["reason"]["enum"].remove("timeout")


def test_enum_value_removed_is_breaking() -> None:
    c = only(changes(_drop_timeout), "enum_value_removed")
    assert (c.where, c.breaking) == ("PaymentFailed.reason=timeout", True)
    assert "values: {reason: {timeout: <one of insufficient_funds, bank_error>}}" in c.why


def test_enum_value_removed_with_an_upcast_value_map_is_compatible() -> None:
    def edit(d: Data) -> None:
        _drop_timeout(d)
        version(d, "PaymentFailed", {"values": {"reason": {"timeout": "bank_error"}}})

    assert not only(changes(edit), "enum_value_removed").breaking


def test_enum_value_added_is_compatible_when_consumers_deploy_first() -> None:
    def edit(d: Data) -> None:
        payload(d, "PaymentFailed")["properties"]["reason"]["enum"].append("fraud")

    c = only(changes(edit), "enum_value_added")
    assert (c.where, c.breaking, c.rollout) == (
        "PaymentFailed.reason=fraud",
        False,
        "consumers first",
    )


def test_version_lowered_is_breaking() -> None:
    def edit(d: Data) -> None:
        d["events"]["PaymentFailed"]["version"] = 1
        del d["events"]["PaymentFailed"]["upcast"]

    c = only(
        changes(edit, base=lambda d: version(d, "PaymentFailed", {"default": {"detail": ""}})),
        "version_lowered",
    )
    assert (c.breaking, c.for_whom) == (True, "consumers")


def test_producer_changed_is_breaking_for_producers() -> None:
    def edit(d: Data) -> None:
        oms, cart = d["services"]["OMS"], d["services"]["Cart"]
        for event in ("InventoryReservationFailed", "InventoryReleased"):
            cart["reacts"][event] = oms["reacts"].pop(event)
        d["events"]["OrderCancelled"]["producer"] = "Cart"

    c = only(changes(edit), "producer_changed")
    assert (c.where, c.breaking, c.for_whom) == ("OrderCancelled", True, "producers")


# --- sagas in flight ------------------------------------------------------------------


def _transitions(d: Data) -> list[Data]:
    found: list[Data] = d["state_machine"]["transitions"]
    return found


def _rename_state(d: Data, old: str, new: str) -> None:
    sm = d["state_machine"]
    sm["states"] = {(new if k == old else k): v for k, v in sm["states"].items()}
    for t in sm["transitions"]:
        for key in ("from", "to"):
            value = t[key]
            t[key] = (
                [new if x == old else x for x in value]
                if isinstance(value, list)
                else (new if value == old else value)
            )
    for deadline in sm.get("deadlines", []):
        deadline["state"] = new if deadline["state"] == old else deadline["state"]


def test_state_renamed_is_one_change_and_breaking() -> None:
    found = changes(lambda d: _rename_state(d, "refunded", "money_back"))
    c = only(found, "state_renamed")
    assert (c.where, c.breaking, c.for_whom) == ("state refunded", True, "sagas in flight")
    assert [x.code for x in found] == ["state_renamed"]


def _skip_refunded(d: Data) -> None:
    """Drop the state `refunded`: a refund leads straight to `released`."""
    del d["state_machine"]["states"]["refunded"]
    for t in _transitions(d):
        if t["on"] == "RefundSucceeded":
            t["to"] = "released"
        if t["on"] == "InventoryReleased":
            t["from"] = ["payment_failed"]


def test_state_removed_is_breaking_for_sagas_in_flight() -> None:
    found = changes(_skip_refunded)
    c = only(found, "state_removed")
    assert (c.where, c.breaking, c.for_whom) == ("state refunded", True, "sagas in flight")


def _extra_transition(d: Data) -> None:
    _transitions(d).append({"on": "DeliveryFailed", "from": "reserved", "to": "delivery_failed"})


def test_transition_removed_is_breaking() -> None:
    c = only(changes(lambda d: _transitions(d).pop(), base=_extra_transition), "transition_removed")
    assert (c.where, c.breaking) == ("reserved --DeliveryFailed--> delivery_failed", True)


def test_transition_added_is_compatible_when_consumers_deploy_first() -> None:
    c = only(changes(_extra_transition), "transition_added")
    assert (c.breaking, c.rollout) == (False, "consumers first")


def test_terminal_outcome_changed_is_breaking() -> None:
    def edit(d: Data) -> None:
        d["state_machine"]["states"]["cancelled"]["outcome"] = "success"

    c = only(changes(edit), "terminal_changed")
    assert (c.where, c.breaking, c.for_whom) == ("state cancelled", True, "sagas in flight")


def _deadline(d: Data) -> Data:
    found: Data = d["state_machine"]["deadlines"][0]
    return found


def _second_deadline(d: Data) -> None:
    d["state_machine"]["deadlines"].append(
        {
            "name": "payment_wait",
            "state": "reserved",
            "within_s": 30,
            "emit": "PaymentFailed",
            "payload": {"reason": "timeout"},
        }
    )


def test_deadline_reorder_is_no_change() -> None:
    assert changes(lambda d: d["state_machine"]["deadlines"].reverse(), base=_second_deadline) == []


def test_deadline_removed_is_breaking() -> None:
    c = only(
        changes(lambda d: d["state_machine"]["deadlines"].pop(), base=_second_deadline),
        "deadline_removed",
    )
    assert (c.where, c.breaking, c.for_whom) == ("deadline payment_wait", True, "sagas in flight")


def test_deadline_renamed_is_breaking() -> None:
    c = only(changes(lambda d: _deadline(d).update(name="slot")), "deadline_renamed")
    assert (c.where, c.breaking) == ("deadline delivery_slot", True)


def test_deadline_state_or_emit_changed_is_breaking() -> None:
    def edit(d: Data) -> None:
        d["state_machine"]["deadlines"][1].update(
            state="placed", emit="InventoryReservationFailed", payload={"reason": "out_of_stock"}
        )

    found = [c for c in changes(edit, base=_second_deadline) if c.code == "deadline_changed"]
    assert [c.breaking for c in found] == [True, True, False]  # state, emit, payload
    assert {c.where for c in found} == {"deadline payment_wait"}


def test_deadline_time_changed_is_compatible() -> None:
    c = only(changes(lambda d: _deadline(d).update(within_s=30)), "deadline_changed")
    assert not c.breaking
    assert "armed timers keep the due time" in c.why


# --- services -------------------------------------------------------------------------


def _release_on_delivery_failure(d: Data) -> None:
    """An extra answering reaction: Inventory releases the goods as soon as delivery fails."""
    d["services"]["Inventory"]["reacts"]["DeliveryFailed"] = {"emits": ["InventoryReleased"]}
    _transitions(d).append({"on": "InventoryReleased", "from": "delivery_failed", "to": "released"})


def test_reaction_removed_is_breaking_when_it_answers() -> None:
    def edit(d: Data) -> None:
        del d["services"]["Inventory"]["reacts"]["DeliveryFailed"]

    c = only(changes(edit, base=_release_on_delivery_failure), "reaction_removed")
    assert (c.where, c.breaking, c.for_whom) == ("Inventory on DeliveryFailed", True, "services")


def test_reaction_added_is_compatible() -> None:
    c = only(changes(_release_on_delivery_failure), "reaction_added")
    assert (c.where, c.breaking) == ("Inventory on DeliveryFailed", False)


def test_reaction_removed_that_answered_nothing_is_compatible() -> None:
    def edit(d: Data) -> None:
        del d["services"]["OrderHistory"]["reacts"]["OrderCreated"]

    assert not only(changes(edit), "reaction_removed").breaking


def _emit_released_on_failure(d: Data) -> None:
    d["services"]["Inventory"]["reacts"]["OrderCreated"]["emits"].append("InventoryReleased")


def test_emit_removed_is_breaking() -> None:
    def edit(d: Data) -> None:
        d["services"]["Inventory"]["reacts"]["OrderCreated"]["emits"].pop()

    c = only(changes(edit, base=_emit_released_on_failure), "emit_removed")
    assert (c.where, c.breaking) == ("Inventory on OrderCreated emits InventoryReleased", True)


def test_emit_added_is_compatible_when_consumers_deploy_first() -> None:
    c = only(changes(_emit_released_on_failure), "emit_added")
    assert (c.breaking, c.rollout) == (False, "consumers first")


def _initiates_two(d: Data) -> None:
    d["services"]["OMS"]["initiates"] = ["OrderCreated", "OrderCancelled"]


def test_initiates_removed_is_breaking_for_services() -> None:
    def edit(d: Data) -> None:
        d["services"]["OMS"]["initiates"] = ["OrderCreated"]

    c = only(changes(edit, base=_initiates_two), "initiates_removed")
    assert (c.where, c.breaking, c.for_whom) == ("service OMS", True, "services")


def test_initiates_added_is_compatible() -> None:
    assert not only(changes(_initiates_two), "initiates_added").breaking


def test_topics_renamed_or_repartitioned_are_breaking() -> None:
    def edit(d: Data) -> None:
        d["topics"]["events"] = {"name": "checkout.events.v2", "partitions": 12}

    found = changes(edit)
    assert [(c.code, c.breaking, c.for_whom) for c in found] == [
        ("topic_renamed", True, "services"),
        ("partitions_changed", True, "services"),
    ]


def test_signing_turned_on_is_breaking() -> None:
    c = only(changes(lambda d: d["saga"].update(signed_events=True)), "signing_changed")
    assert (c.breaking, c.for_whom) == (True, "consumers")


def test_state_renamed_with_its_deadline_is_one_change() -> None:
    found = changes(lambda d: _rename_state(d, "paid", "charged"))
    assert [(c.code, c.where) for c in found] == [("state_renamed", "state paid")]


def test_upcasts_of_older_versions_must_stay() -> None:
    def edit(d: Data) -> None:
        version(d, "PaymentFailed", {"default": {"detail": "changed"}})

    c = only(
        changes(edit, base=lambda d: version(d, "PaymentFailed", {"default": {"detail": ""}})),
        "upcast_changed",
    )
    assert (c.where, c.breaking) == ("PaymentFailed upcast from 1", True)


# --- the command ----------------------------------------------------------------------

RENAMED = "      required: [order_id, cause, why]"
"""The line that, with `reason:` renamed below it, renames OrderCancelled's reason."""


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def _rename_in_text(text: str) -> str:
    """The checkout registry's text with OrderCancelled's `reason` renamed `why`."""
    head, tail = text.split("  OrderCancelled:", 1)
    body, rest = tail.split("  InventoryReleased:", 1)
    body = body.replace("required: [order_id, cause, reason]", "required: [order_id, cause, why]")
    body = body.replace("        reason: {type: string", "        why: {type: string")
    return f"{head}  OrderCancelled:{body}  InventoryReleased:{rest}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository holding the checkout registry at registry/saga.yaml, committed;
    the current folder."""
    monkeypatch.delenv("SAGA_REGISTRY", raising=False)
    (tmp_path / "registry").mkdir()
    shutil.copy(CHECKOUT, tmp_path / "registry" / "saga.yaml")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "registry")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _edit(project: Path, change: Callable[[str], str]) -> Path:
    path = project / "registry" / "saga.yaml"
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def saga(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_diff_head_names_the_uncommitted_breaking_change_and_exits_1(project: Path) -> None:
    _edit(project, _rename_in_text)
    result = saga("diff", "HEAD")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("breaking: consumers: OrderCancelled.reason: field_renamed: ")
    assert lines[-1] == (
        "HEAD:registry/saga.yaml -> registry/saga.yaml: 1 change: 1 breaking (consumers), "
        "0 compatible"
    )
    assert saga("diff", "HEAD", "--allow-breaking").exit_code == 0


def test_diff_of_compatible_or_no_changes_exits_0(project: Path) -> None:
    result = saga("diff", "HEAD")
    assert (result.exit_code, result.stdout) == (
        0,
        "HEAD:registry/saga.yaml -> registry/saga.yaml: no changes\n",
    )
    _edit(project, lambda t: t.replace("maxLength: 500}", "maxLength: 1000}"))
    result = saga("diff", "HEAD")
    assert result.exit_code == 0
    assert "3 changes: all compatible" in result.stdout  # the three failure events' detail


def test_diff_json_is_a_document_of_changes_and_summary(project: Path) -> None:
    _edit(project, _rename_in_text)
    result = saga("diff", "HEAD", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["old"] == "HEAD:registry/saga.yaml"
    assert [c["code"] for c in doc["changes"]] == ["field_renamed"]
    assert doc["changes"][0]["breaking"] is True
    assert doc["summary"]["breaking"] == 1
    assert doc["summary"]["breaking_for"] == ["consumers"]


def test_diff_of_two_revisions_and_of_two_files(project: Path) -> None:
    edited = _edit(project, _rename_in_text)
    _git(project, "commit", "-q", "-am", "rename")
    result = saga("diff", "HEAD~1", "HEAD")
    assert result.exit_code == 1
    assert "HEAD~1:registry/saga.yaml -> HEAD:registry/saga.yaml: 1 change" in result.stdout
    result = saga("diff", str(CHECKOUT), str(edited))
    assert result.exit_code == 1
    assert f"{CHECKOUT} -> {edited}: 1 change: 1 breaking" in result.stdout


def test_diff_from_a_subfolder_reads_the_registry_path_from_the_repository_root(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _edit(project, _rename_in_text)
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    result = saga("diff", "HEAD", "--registry", "../registry/saga.yaml")
    assert result.exit_code == 1, result.output
    assert "HEAD:registry/saga.yaml -> ../registry/saga.yaml" in result.stdout


def test_a_bad_revision_is_one_line_and_exit_2(project: Path) -> None:
    result = saga("diff", "no-such-rev")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "error: 'no-such-rev' is neither a registry file nor a git revision\n"
    option = saga("diff", "--", "--output=leaked")  # never passed to git as an option
    assert option.exit_code == 2
    assert not (project / "leaked").exists()


def test_a_revision_without_the_registry_is_one_line_and_exit_2(project: Path) -> None:
    (project / "other.txt").write_text("x\n")
    _git(project, "rm", "-q", "--cached", "registry/saga.yaml")
    _git(project, "add", "other.txt")
    _git(project, "commit", "-q", "-m", "untrack")
    result = saga("diff", "HEAD")
    assert result.exit_code == 2
    assert result.stderr == "error: registry/saga.yaml does not exist at revision HEAD\n"


def test_an_invalid_registry_at_a_revision_is_one_line_naming_it(project: Path) -> None:
    path = _edit(project, lambda t: t.replace("initial: new", "initial: nowhere"))
    _git(project, "commit", "-q", "-am", "broken")
    shutil.copy(CHECKOUT, path)
    result = saga("diff", "HEAD")
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        "error: registry HEAD:registry/saga.yaml: HEAD:registry/saga.yaml:"
    )


def test_a_revision_outside_a_git_repository_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = saga("diff", "HEAD", "--registry", str(CHECKOUT.relative_to(CHECKOUT.parents[1])))
    assert result.exit_code == 2
    assert "is not in a git repository" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_codegen_prints_the_summary_when_the_registry_changed_since_head(project: Path) -> None:
    args = ["codegen", "--out", "out", "--no-render", "--no-tests"]
    result = saga(*args)
    assert result.exit_code == 0, result.output
    assert "registry since HEAD" not in result.stdout  # unchanged: silent
    _edit(project, _rename_in_text)
    result = saga(*args)
    assert result.exit_code == 0, result.output  # a breaking change never fails codegen
    lines = result.stdout.splitlines()
    at = lines.index(
        "registry since HEAD: 1 change: 1 breaking (consumers), 0 compatible "
        "(details: saga diff HEAD)"
    )
    assert lines[at + 1].startswith("  breaking: consumers: OrderCancelled.reason: field_renamed")
    checked = saga("codegen", "--check", "--out", "out", "--no-render", "--no-tests")
    assert checked.exit_code == 0, checked.output
    assert lines[at] in checked.stdout.splitlines()


def test_codegen_outside_git_prints_no_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saga.yaml").write_text(_rename_in_text(CHECKOUT.read_text(encoding="utf-8")))
    result = saga("codegen", "--registry", "saga.yaml", "--out", "out", "--no-render", "--no-tests")
    assert result.exit_code == 0, result.output
    assert "registry since HEAD" not in result.output


def test_an_unnamed_deadline_of_a_renamed_state_changes_its_key() -> None:
    def edit(d: Data) -> None:
        _rename_state(d, "paid", "charged")

    found = changes(edit, base=lambda d: _deadline(d).pop("name"))
    assert [(c.code, c.where) for c in found] == [
        ("state_renamed", "state paid"),
        ("deadline_renamed", "deadline paid.DeliveryFailed"),
    ]


def test_upcast_entries_reordered_are_no_change() -> None:
    def base(d: Data) -> None:
        version(d, "PaymentFailed", {"rename": {"code": "reason", "text": "detail"}})

    def edit(d: Data) -> None:
        version(d, "PaymentFailed", {"rename": {"text": "detail", "code": "reason"}})

    assert changes(edit, base=base) == []
