"""Event versions in the registry: upcasts, the older versions' payloads derived from
them, the dataschema naming a version, and what validation refuses of versions, upcasts,
`undoes` and deadline names."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from saga_registry.registry import Registry, RegistryInvalid, load_registry
from saga_registry.registry.model import Event, FieldSpec, Upcast
from saga_registry.registry.versions import dataschema, fields_at, upcast, version_of
from tests.helpers import ORDERS, TRIP
from tests.versioned import trip_v2

# -- upcast -------------------------------------------------------------------------------


def _event(*upcasts: Upcast, fields: tuple[FieldSpec, ...] = ()) -> Event:
    return Event(
        name="Thing",
        kind="domain",
        producer="P",
        stage=(("en", "a thing"),),
        description="",
        fields=fields,
        version=len(upcasts) + 1,
        upcasts=upcasts,
    )


def test_upcast_renames_maps_values_and_adds_defaults() -> None:
    step = Upcast(
        1,
        rename=(("notes", "remarks"),),
        values=(("car_class", (("economy", "mini"),)),),
        defaults=(("channel", "web"),),
    )
    old = {"id": "t1", "notes": "window seat", "car_class": "economy"}
    assert upcast(_event(step), old, 1) == {
        "id": "t1",
        "remarks": "window seat",
        "car_class": "mini",
        "channel": "web",
    }


def test_upcast_leaves_values_not_mapped_and_fields_absent_alone() -> None:
    step = Upcast(
        1, rename=(("notes", "remarks"),), values=(("car_class", (("economy", "mini"),)),)
    )
    assert upcast(_event(step), {"car_class": "suv"}, 1) == {"car_class": "suv"}


def test_upcast_value_maps_are_typed_true_is_not_one() -> None:
    step = Upcast(1, values=(("level", ((1, 10), (2, 20))), ("flag", (("1", "one"),))))
    event = _event(step)
    assert upcast(event, {"level": 1}, 1) == {"level": 10}
    assert upcast(event, {"level": True}, 1) == {"level": True}
    assert upcast(event, {"level": 1.5}, 1) == {"level": 1.5}
    assert upcast(event, {"flag": True}, 1) == {"flag": True}
    assert upcast(event, {"flag": "1"}, 1) == {"flag": "one"}


def test_a_default_never_overwrites_a_value_the_event_has() -> None:
    step = Upcast(1, defaults=(("channel", "web"), ("seats", 1)))
    assert upcast(_event(step), {"channel": "app"}, 1) == {"channel": "app", "seats": 1}


def test_upcasts_chain_in_order_from_the_event_version() -> None:
    # 1 -> 2 renames a to b; 2 -> 3 maps b's values, then renames b to c: each step sees
    # what the previous one made, so the order matters.
    one = Upcast(1, rename=(("a", "b"),), defaults=(("x", 0),))
    two = Upcast(2, rename=(("b", "c"),), values=(("c", (("old", "new"),)),), defaults=(("y", 1),))
    event = _event(one, two)
    assert upcast(event, {"a": "old"}, 1) == {"c": "new", "x": 0, "y": 1}
    assert upcast(event, {"b": "old", "x": 5}, 2) == {"c": "new", "x": 5, "y": 1}
    assert upcast(event, {"c": "kept"}, 3) == {"c": "kept"}


def test_upcast_leaves_its_input_untouched() -> None:
    step = Upcast(1, rename=(("a", "b"),), values=(("b", (("x", "y"),)),), defaults=(("d", 1),))
    old = {"a": "x", "nested": {"k": 1}}
    before = copy.deepcopy(old)
    new = upcast(_event(step), old, 1)
    assert old == before
    assert new == {"b": "y", "d": 1, "nested": {"k": 1}}


def test_value_maps_of_integer_enums_read_from_yaml_apply(tmp_path: Path) -> None:
    """YAML keys are text: `{2: 1}` must still map the integer 2 (and not True)."""
    text = trip_v2().replace(
        "        nights: {type: integer, minimum: 1, maximum: 90}\n"
        "        car_class: {type: string, enum: [mini",
        "        nights: {type: integer, enum: [1, 7, 14]}\n"
        "        car_class: {type: string, enum: [mini",
    )
    text = text.replace(
        "        values: {car_class: {economy: mini}}\n",
        "        values: {car_class: {economy: mini}, nights: {2: 1, 3: 7}}\n",
    )
    path = tmp_path / "saga.yaml"
    path.write_text(text, encoding="utf-8")
    trip = load_registry(path).event("TripRequested")
    assert upcast(trip, {"nights": 3}, 1)["nights"] == 7
    assert upcast(trip, {"nights": 2}, 1)["nights"] == 1
    assert upcast(trip, {"nights": True}, 1)["nights"] is True
    (nights,) = (f for f in fields_at(trip, 1) if f.name == "nights")
    assert nights.enum == (2, 3, 14)


# -- fields_at ----------------------------------------------------------------------------


def _shape(fields: tuple[FieldSpec, ...]) -> list[tuple[str, bool, tuple[Any, ...]]]:
    return sorted((f.name, f.required, f.enum) for f in fields)


def _v2(tmp_path: Path, text: str | None = None) -> Registry:
    path = tmp_path / "saga.yaml"
    path.write_text(trip_v2() if text is None else text, encoding="utf-8")
    return load_registry(path)


@pytest.mark.parametrize("name", ["TripRequested", "FlightBooked"])
def test_version_one_of_the_changed_events_is_the_original_payload(
    tmp_path: Path, name: str
) -> None:
    original = load_registry(TRIP).event(name)
    v2 = _v2(tmp_path).event(name)
    assert v2.version == 2
    assert _shape(fields_at(v2, 1)) == _shape(original.fields)
    assert fields_at(v2, 1) == original.fields, "types, limits and nesting kept too"
    assert fields_at(v2, 2) == v2.fields


def test_fields_at_walks_a_three_version_chain_backwards() -> None:
    level = FieldSpec("level", "string", enum=("low", "high"))
    fields = (FieldSpec("id", "string"), FieldSpec("label", "string"), level)
    event = Event(
        name="Thing",
        kind="domain",
        producer="P",
        stage=(("en", "a thing"),),
        description="",
        fields=(*fields, FieldSpec("origin", "string")),
        version=3,
        upcasts=(
            Upcast(1, rename=(("title", "name"),), defaults=(("level", "low"),)),
            Upcast(
                2,
                rename=(("name", "label"),),
                values=(("level", (("minor", "low"),)),),
                defaults=(("origin", "web"),),
            ),
        ),
    )
    v2 = fields_at(event, 2)
    assert _shape(v2) == [("id", True, ()), ("level", True, ("minor", "high")), ("name", True, ())]
    assert _shape(fields_at(event, 1)) == [("id", True, ()), ("title", True, ())]
    assert fields_at(event, 3) == event.fields


@pytest.mark.parametrize("version", [0, 3, -1])
def test_fields_at_a_version_the_event_never_had_raises(tmp_path: Path, version: int) -> None:
    v2 = _v2(tmp_path).event("FlightBooked")
    with pytest.raises(ValueError, match=f"FlightBooked has versions 1 to 2, not {version}"):
        fields_at(v2, version)


# -- dataschema ---------------------------------------------------------------------------


def test_dataschema_names_saga_event_and_version_and_reads_back() -> None:
    urn = dataschema("trip_booking", "FlightBooked", 2)
    assert urn == "urn:saga:trip_booking:FlightBooked:v2"
    assert version_of(urn) == 2
    assert version_of(dataschema("t1.trips", "X", 17)) == 17


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("urn:saga:trip_booking:FlightBooked:v3", 3),
        ("https://schemas.example/trip_booking/FlightBooked/v2", 2),
        ("schemas/FlightBooked.v4.json", 4),
        ("urn:saga:trip_booking:FlightBooked", None),
        ("https://schemas.example/FlightBooked.json", None),
        ("urn:saga:trip_booking:FlightBookedv2", None),
        ("urn:saga:x:v2:FlightBooked", None),
        ("", None),
    ],
)
def test_version_of_reads_the_forms_it_documents(text: str, version: int | None) -> None:
    assert version_of(text) == version


# -- the registry checks ------------------------------------------------------------------


def _problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = tmp_path / "saga.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RegistryInvalid) as info:
        load_registry(path)
    return path, [str(p) for p in info.value.problems]


def _at(path: Path, line_has: str, token: str | None = None, occurrence: int = 1) -> str:
    """`path:line:col` of `token` (default `line_has`) on the `occurrence`-th line holding
    `line_has`."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line_has in line:
            seen += 1
            if seen == occurrence:
                return f"{path}:{number}:{line.index(token or line_has) + 1}"
    raise AssertionError(f"{line_has!r} not in {path}")


def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


_TRIP_UPCAST = (
    "      - from: 1\n"
    "        rename: {notes: remarks}\n"
    "        values: {car_class: {economy: mini}}\n"
    "        default: {channel: web}\n"
)


def _trip_upcast(new: str) -> str:
    return _swap(trip_v2(), _TRIP_UPCAST, new)


def test_the_versioned_and_shipped_registries_load_without_problems(tmp_path: Path) -> None:
    v2 = _v2(tmp_path)
    assert {e.name: e.version for e in v2.events if e.version > 1} == {
        "TripRequested": 2,
        "FlightBooked": 2,
    }
    checkout = load_registry(ORDERS)  # the frozen copy of the checkout
    assert checkout.event("InventoryReleased").undoes == ("InventoryReserved",)


def test_a_version_without_its_upcast_is_refused_at_the_version(tmp_path: Path) -> None:
    text = _swap(
        trip_v2(),
        "    version: 2\n    upcast:\n" + _TRIP_UPCAST,
        "    version: 3\n    upcast:\n" + _TRIP_UPCAST,
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'version: 3', '3')}: TripRequested is at version 3 but has no upcast "
        "from version 2: add `upcast: [{from: 2}]` with what changed (an empty one for none)"
    ]


def test_version_two_without_an_upcast_is_refused(tmp_path: Path) -> None:
    text = _swap(
        trip_v2(),
        "  HotelBooked:\n    kind: domain\n",
        "  HotelBooked:\n    version: 2\n    kind: domain\n",
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'version: 2', '2', occurrence=3)}: HotelBooked is at version 2 but has no "
        "upcast from version 1: add `upcast: [{from: 1}]` with what changed (an empty one for "
        "none)"
    ]
    # An empty upcast says nothing changed: version 1 reads as it is.
    fixed = text.replace(
        "    version: 2\n    kind: domain\n",
        "    version: 2\n    upcast: [{from: 1}]\n    kind: domain\n",
    )
    path.write_text(fixed, encoding="utf-8")
    hotel = load_registry(path).event("HotelBooked")
    assert fields_at(hotel, 1) == hotel.fields
    assert upcast(hotel, {"booking_id": "b1"}, 1) == {"booking_id": "b1"}


def test_a_version_with_no_upcast_at_all_names_every_missing_one(tmp_path: Path) -> None:
    text = _swap(trip_v2(), "    version: 2\n    upcast:\n" + _TRIP_UPCAST, "    version: 3\n")
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'version: 3', '3')}: TripRequested is at version 3 but has no upcast "
        "from versions 1, 2: add `upcast: [{from: 1}]` with what changed (an empty one for "
        "none)"
    ]


def test_an_upcast_from_the_current_version_is_refused(tmp_path: Path) -> None:
    path, problems = _problems(tmp_path, _trip_upcast(_TRIP_UPCAST + "      - from: 2\n"))
    assert problems == [
        f"{_at(path, '- from: 2', '2')}: TripRequested is at version 2: there is no version 3 "
        "for an upcast from 2 to read into"
    ]


def test_two_upcasts_from_one_version_are_refused_at_the_second(tmp_path: Path) -> None:
    path, problems = _problems(tmp_path, _trip_upcast(_TRIP_UPCAST + "      - from: 1\n"))
    assert problems == [
        f"{_at(path, '- from: 1', '1', occurrence=2)}: a second upcast from version 1: merge it "
        "into the first (one upcast per older version holds all its rename, values and default)"
    ]


def test_a_rename_to_a_name_the_next_version_lacks_is_refused(tmp_path: Path) -> None:
    text = _trip_upcast(_TRIP_UPCAST.replace("{notes: remarks}", "{notes: remarsk}"))
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, '{notes: remarsk}', 'notes')}: 'remarsk' is not a field of version 2 of "
        "TripRequested (did you mean 'remarks'?)"
    ]


@pytest.mark.parametrize("version", [0, -1, 3])
def test_upcast_from_a_version_the_event_never_had_raises(version: int) -> None:
    event = _event(Upcast(1, rename=(("a", "b"),)))
    with pytest.raises(ValueError, match=f"Thing has versions 1 to 2, not {version}"):
        upcast(event, {"a": 1}, version)


def test_two_renames_into_one_field_are_refused(tmp_path: Path) -> None:
    text = _trip_upcast(
        _TRIP_UPCAST.replace("{notes: remarks}", "{notes: remarks, comment: remarks}")
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'comment: remarks', 'comment')}: 'notes' and 'comment' are both renamed "
        "to 'remarks': a field takes the value of one"
    ]


def test_a_rename_from_a_name_still_a_field_is_refused(tmp_path: Path) -> None:
    text = _trip_upcast(
        _TRIP_UPCAST.replace("{notes: remarks}", "{notes: remarks, nights: budget}")
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'nights: budget', 'nights')}: 'nights' is still a field of version 2 of "
        "TripRequested: rename it to another name"
    ]


def test_renaming_to_the_saga_key_is_refused(tmp_path: Path) -> None:
    text = _trip_upcast(
        _TRIP_UPCAST.replace("{notes: remarks}", "{notes: remarks, trip: booking_id}")
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'trip: booking_id', 'trip')}: the saga key 'booking_id' keeps its name "
        "in every version"
    ]


def test_renaming_the_saga_key_away_is_refused(tmp_path: Path) -> None:
    text = _trip_upcast(
        _TRIP_UPCAST.replace("{notes: remarks}", "{notes: remarks, booking_id: remarks}")
    )
    path, problems = _problems(tmp_path, text)
    where = _at(path, "booking_id: remarks", "booking_id")
    assert f"{where}: the saga key 'booking_id' keeps its name in every version" in problems


def test_a_default_for_the_saga_key_is_refused(tmp_path: Path) -> None:
    text = _trip_upcast(_TRIP_UPCAST.replace("{channel: web}", "{channel: web, booking_id: b1}"))
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'booking_id: b1', 'booking_id')}: the saga key is in every version: no default"
    ]


def test_a_value_map_to_a_value_outside_the_enum_is_refused(tmp_path: Path) -> None:
    text = _trip_upcast(_TRIP_UPCAST.replace("{economy: mini}", "{economy: tiny}"))
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, '{economy: tiny}', 'tiny')}: 'tiny' is not a value of car_class in "
        "version 2 of TripRequested (its values: mini, compact, suv, van)"
    ]


def test_a_value_map_to_true_on_an_integer_enum_is_refused(tmp_path: Path) -> None:
    text = _swap(
        trip_v2(),
        "        nights: {type: integer, minimum: 1, maximum: 90}\n"
        "        car_class: {type: string, enum: [mini",
        "        nights: {type: integer, enum: [1, 7, 14]}\n"
        "        car_class: {type: string, enum: [mini",
    )
    text = _swap(
        text,
        "        values: {car_class: {economy: mini}}\n",
        "        values: {car_class: {economy: mini}, nights: {2: true}}\n",
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, '{2: true}', 'true')}: True is not a value of nights in version 2 of "
        "TripRequested (its values: 1, 7, 14)"
    ]


def test_a_value_map_from_a_non_integer_on_an_integer_field_is_refused(tmp_path: Path) -> None:
    text = _swap(
        trip_v2(),
        "        values: {car_class: {economy: mini}}\n",
        "        values: {car_class: {economy: mini}, nights: {two: 2}}\n",
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, '{two: 2}', 'two')}: 'two' is not an integer: nights is an integer "
        "field, so an older value of it is one too"
    ]


@pytest.mark.parametrize(
    ("mapped", "message"),
    [
        ("{2: two}", "value map of 'nights': 'two' is not of type 'integer'"),
        ("{2: 0}", "value map of 'nights': 0 is less than the minimum of 1"),
    ],
)
def test_a_value_map_to_a_value_its_field_refuses_is_refused(
    tmp_path: Path, mapped: str, message: str
) -> None:
    # nights has no enum: the value is checked against the field's type and range.
    text = _trip_upcast(
        _TRIP_UPCAST.replace("{car_class: {economy: mini}}", f"{{nights: {mapped}}}")
    )
    path, problems = _problems(tmp_path, text)
    value = mapped.strip("{}").split(": ")[1]
    assert problems == [f"{_at(path, mapped, value)}: {message}"]


@pytest.mark.parametrize(
    ("default", "message"),
    [
        ("{channel: 3}", "default for 'channel': 3 is not of type 'string'"),
        ("{channel: fax}", "default for 'channel': 'fax' is not one of ['web', 'app']"),
    ],
)
def test_a_default_that_does_not_fit_its_field_is_refused(
    tmp_path: Path, default: str, message: str
) -> None:
    text = _trip_upcast(_TRIP_UPCAST.replace("{channel: web}", default))
    path, problems = _problems(tmp_path, text)
    value = default.split(": ")[1].rstrip("}")
    # One line per way it does not fit (3 is neither a string nor one of the values).
    assert f"{_at(path, default, value)}: {message}" in problems
    assert all(
        p.startswith(f"{_at(path, default, value)}: default for 'channel': ") for p in problems
    )


def test_a_default_out_of_range_is_refused(tmp_path: Path) -> None:
    # seats, a new field of FlightBooked's version 2, defaulted below its minimum.
    text = _swap(
        trip_v2(),
        "        default: {fare_class: economy}\n",
        "        default: {fare_class: economy, seats: 0}\n",
    )
    text = _swap(
        text,
        "        fare_class: {type: string, enum: [economy, business]}\n",
        "        fare_class: {type: string, enum: [economy, business]}\n"
        "        seats: {type: integer, minimum: 1, maximum: 9}\n",
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'seats: 0', '0')}: default for 'seats': 0 is less than the minimum of 1"
    ]


def test_undoes_on_an_event_that_is_no_compensation_is_refused(tmp_path: Path) -> None:
    text = _swap(
        trip_v2(),
        "  HotelBooked:\n    kind: domain\n",
        "  HotelBooked:\n    kind: domain\n    undoes: [FlightBooked]\n",
    )
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'undoes: [FlightBooked]', 'undoes')}: only a compensation undoes events; "
        "HotelBooked is a domain"
    ]


def test_undoes_naming_an_unknown_event_suggests_the_known_one(tmp_path: Path) -> None:
    text = _swap(trip_v2(), "undoes: [HotelBooked]", "undoes: [HotelBokked]")
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'undoes: [HotelBokked]', 'HotelBokked')}: 'HotelBokked' is not an event "
        "(did you mean 'HotelBooked'?)"
    ]


def test_undoes_naming_a_failure_event_is_refused(tmp_path: Path) -> None:
    text = _swap(trip_v2(), "undoes: [HotelBooked]", "undoes: [HotelBooked, HotelBookingFailed]")
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, 'undoes: [HotelBooked, Hotel', 'HotelBookingFailed')}: "
        "'HotelBookingFailed' is a failure event: a compensation undoes a domain one"
    ]


_SECOND_DEADLINE = (
    "    - state: car_rented\n"
    "      within_s: 300\n"
    "      emit: PaymentDeclined\n"
    "      payload: {reason: timeout}\n"
)


def test_two_deadlines_with_one_key_and_no_names_are_refused(tmp_path: Path) -> None:
    text = trip_v2() + _SECOND_DEADLINE.replace("300", "600")
    path, problems = _problems(tmp_path, text)
    assert problems == [
        f"{_at(path, '- state: car_rented', 'state', occurrence=2)}: deadline "
        "'car_rented.PaymentDeclined' is already deadline 2: give each a distinct `name`"
    ]
    # Named apart, the two are fine.
    named = trip_v2() + _SECOND_DEADLINE.replace("300", "600") + "      name: payment_late\n"
    path.write_text(named, encoding="utf-8")
    assert [d.key for d in load_registry(path).state_machine.deadlines] == [
        "requested.FlightBookingFailed",
        "car_rented.PaymentDeclined",
        "payment_late",
    ]


def test_a_deadline_name_that_is_not_snake_case_is_refused(tmp_path: Path) -> None:
    text = _swap(
        trip_v2(),
        "      within_s: 120\n",
        "      within_s: 120\n      name: FlightLate\n",
    )
    path, problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{_at(path, 'name: FlightLate', 'FlightLate')}: ")
    assert "deadline name" in problems[0] and "FlightLate" in problems[0]


def test_a_deadline_may_be_named_by_the_key_the_engine_made(tmp_path: Path) -> None:
    """`name: <state>.<Event>` keeps the timers armed under the implicit key when the
    state is renamed (what `saga diff` advises)."""
    text = _swap(
        trip_v2(), "      within_s: 120\n", "      within_s: 120\n      name: requested.Late\n"
    )
    path = tmp_path / "saga.yaml"
    path.write_text(text, encoding="utf-8")
    keys = [d.key for d in load_registry(path).state_machine.deadlines]
    assert keys[0] == "requested.Late"
