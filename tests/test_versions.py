"""Event versions: upcasts reading older payloads as the current one, the older versions'
fields derived back from the registry, the version carried in `dataschema` (and covered by
the signature), the registry checks of versions, upcasts, `undoes` and deadline names, and
the move of index-keyed timers to their deadline's stable key."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import hashlib
import hmac
import importlib.util
import json
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
)

from saga_registry.codegen import write
from saga_registry.engine import tables
from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.codec import EventCodec
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope
from saga_registry.engine.runner import ServiceRunner
from saga_registry.engine.signing import Key, Keyring
from saga_registry.engine.timer_keys import OLD_TABLE, move_index_timers, old_key
from saga_registry.engine.timers import DeadlineTimers
from saga_registry.registry import Registry, RegistryInvalid, load_registry
from saga_registry.registry.model import Event, FieldSpec, Upcast
from saga_registry.registry.versions import dataschema, fields_at, upcast, version_of
from tests.autoreact import payload
from tests.helpers import ORDERS, TRIP
from tests.test_saga_run import make_project, start
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
        f"{_at(path, '- from: 1', '1', occurrence=2)}: a second upcast from version 1"
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


# -- the codec ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trip_v2_types(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, dict[str, Any]]:
    """The trip v2 registry and its generated event classes (`EVENT_TYPES`)."""
    root = tmp_path_factory.mktemp("trip_v2")
    path = root / "registry" / "saga.yaml"
    path.parent.mkdir()
    path.write_text(trip_v2(), encoding="utf-8")
    registry = load_registry(path)
    package = f"vt_trip_{uuid.uuid4().hex[:8]}"
    write(registry, path, root, render=False, package=package, tests=False)
    spec = importlib.util.spec_from_file_location(f"{package}.events", root / package / "events.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the annotations through it
    spec.loader.exec_module(module)
    return registry, dict(module.EVENT_TYPES)


def _codec(registry: Registry, types: dict[str, Any], service: str = "Hotels") -> EventCodec:
    return EventCodec(registry, service, types, {}, set(), registry.events_topic.name)


_FLIGHT_V1 = {
    "booking_id": "b1",
    "pnr": "ABC123",
    "segments": [{"flight_no": "LH123", "origin": "FRA", "destination": "LIS", "departs_at": "x"}],
    "fare": 100,
    "currency": "EUR",
}


def _envelope(kind: str, data: dict[str, Any], schema: str = "") -> Envelope:
    return Envelope.new(
        type=kind,
        source="tests",
        saga_id=str(data["booking_id"]),
        data=json.dumps(data).encode(),
        dataschema=schema,
    )


@pytest.mark.parametrize("schema", ["", "urn:saga:trip_booking:FlightBooked:v1"])
def test_a_version_one_event_reads_as_the_current_class(
    trip_v2_types: tuple[Registry, dict[str, Any]], schema: str
) -> None:
    registry, types = trip_v2_types
    codec = _codec(registry, types)
    record = _envelope("FlightBooked", _FLIGHT_V1, schema).to_record(registry.events_topic.name)
    _, event = codec.read(Delivery(record, 0, 0))
    assert type(event) is types["FlightBooked"]
    assert event.record_locator == "ABC123"
    assert event.fare_class == "economy"
    assert not hasattr(event, "pnr")


@pytest.mark.parametrize("schema", ["", "urn:saga:trip_booking:TripRequested:v1"])
def test_an_old_trip_request_gets_renamed_mapped_and_defaulted_fields(
    trip_v2_types: tuple[Registry, dict[str, Any]], schema: str
) -> None:
    registry, types = trip_v2_types
    old = payload(load_registry(TRIP), "TripRequested", "b2")
    old.update(car_class="economy", notes="aisle")
    event = _codec(registry, types, "Flights").decode(_envelope("TripRequested", old, schema))
    assert (event.car_class, event.remarks, event.channel) == ("mini", "aisle", "web")
    kept = dict(old, car_class="suv")
    assert _codec(registry, types).decode(_envelope("TripRequested", kept)).car_class == "suv"


def test_a_current_event_is_read_as_it_is_and_the_version_decides(
    trip_v2_types: tuple[Registry, dict[str, Any]],
) -> None:
    registry, types = trip_v2_types
    codec = _codec(registry, types)
    v2 = dict(_FLIGHT_V1, record_locator="XYZ789", fare_class="business")
    del v2["pnr"]
    urn = dataschema(registry.name, "FlightBooked", 2)
    event = codec.decode(_envelope("FlightBooked", v2, urn))
    assert (event.record_locator, event.fare_class) == ("XYZ789", "business")
    # A version 1 payload claiming version 2 is not upcast: it fails as a v2 payload.
    with pytest.raises(BadEnvelope, match="invalid FlightBooked payload"):
        codec.decode(_envelope("FlightBooked", _FLIGHT_V1, urn))


def test_a_newer_version_than_the_registry_knows_is_refused(
    trip_v2_types: tuple[Registry, dict[str, Any]],
) -> None:
    registry, types = trip_v2_types
    urn = dataschema(registry.name, "FlightBooked", 3)
    with pytest.raises(BadEnvelope, match="FlightBooked version 3 is newer than this registry's 2"):
        _codec(registry, types).decode(_envelope("FlightBooked", _FLIGHT_V1, urn))


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("https://schemas.example/FlightBooked.json", "names no version"),
        ("urn:saga:trip_booking:FlightBooked:v0", "version 0 does not exist"),
    ],
)
def test_a_dataschema_naming_no_usable_version_is_refused(
    trip_v2_types: tuple[Registry, dict[str, Any]], schema: str, message: str
) -> None:
    registry, types = trip_v2_types
    with pytest.raises(BadEnvelope, match=message):
        _codec(registry, types).decode(_envelope("FlightBooked", _FLIGHT_V1, schema))


def test_a_record_carries_its_event_current_version(
    trip_v2_types: tuple[Registry, dict[str, Any]],
) -> None:
    registry, types = trip_v2_types
    codec = _codec(registry, types, "Flights")
    v2 = dict(_FLIGHT_V1, record_locator="XYZ789", fare_class="business")
    del v2["pnr"]
    record = codec.record_of(_envelope("FlightBooked", v2))
    assert record.header("ce_dataschema") == b"urn:saga:trip_booking:FlightBooked:v2"
    hotel = _envelope("HotelCancelled", {"booking_id": "b1"})
    assert codec.record_of(hotel).header("ce_dataschema") == (
        b"urn:saga:trip_booking:HotelCancelled:v1"
    )
    # A record that names its version already (a replay) keeps it.
    kept = _envelope("FlightBooked", _FLIGHT_V1, "urn:saga:trip_booking:FlightBooked:v1")
    assert codec.record_of(kept).header("ce_dataschema") == (
        b"urn:saga:trip_booking:FlightBooked:v1"
    )


def test_a_record_of_an_unversioned_registry_is_version_one() -> None:
    import trip_booking.events as unversioned

    registry = load_registry(TRIP)
    codec = _codec(registry, dict(unversioned.EVENT_TYPES), "Flights")
    record = codec.record_of(_envelope("FlightBooked", _FLIGHT_V1))
    assert record.header("ce_dataschema") == b"urn:saga:trip_booking:FlightBooked:v1"
    assert version_of(record.header("ce_dataschema").decode()) == 1  # type: ignore[union-attr]
    assert codec.decode(Envelope.from_record(record)).pnr == "ABC123"


# -- signatures ---------------------------------------------------------------------------

_FLIGHTS = Key("f1", b"f" * 32)
_SIGNED_BEFORE_VERSIONS = (
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_correlationid",
    "ce_causationid",
)
"""The headers signatures covered before versions, in their order."""


def _mac_before_versions(secret: bytes, record: Record) -> str:
    """The signature as written before versions: the CloudEvents attributes, key, value."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    heads = (record.header(h) or b"" for h in _SIGNED_BEFORE_VERSIONS)
    for part in (*heads, record.key, record.value):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def _with_header(record: Record, name: str, value: bytes | None) -> Record:
    headers = tuple((k, v) for k, v in record.headers if k != name)
    if value is not None:
        headers = (*headers, (name, value))
    return Record(record.topic, record.key, record.value, headers)


def test_a_version_swapped_after_signing_fails_verification(
    trip_v2_types: tuple[Registry, dict[str, Any]],
) -> None:
    registry, types = trip_v2_types
    keys = Keyring({"Flights": [_FLIGHTS]})
    codec = _codec(registry, types, "Flights")
    codec.keyring = keys
    v2 = dict(_FLIGHT_V1, record_locator="XYZ789", fare_class="business")
    del v2["pnr"]
    signed = codec.record_of(_envelope("FlightBooked", v2))
    keys.verify("Flights", signed)
    v1 = b"urn:saga:trip_booking:FlightBooked:v1"
    for forged in (
        _with_header(signed, "ce_dataschema", v1),
        _with_header(signed, "ce_dataschema", None),
    ):
        with pytest.raises(BadEnvelope, match="wrong signature"):
            keys.verify("Flights", forged)


def test_a_record_signed_before_versions_still_verifies() -> None:
    keys = Keyring({"Flights": [_FLIGHTS]})
    env = _envelope("FlightBooked", _FLIGHT_V1)
    record = env.to_record("trips.booking.events")
    assert record.header("ce_dataschema") is None
    old = f"{_FLIGHTS.id}:{_mac_before_versions(_FLIGHTS.secret, record)}".encode()
    signed_then = _with_header(record, "saga_signature", old)
    keys.verify("Flights", signed_then)
    assert keys.sign("Flights", record) == signed_then, "signs as it did without a version"
    # Adding a version to a record signed without one is a change too.
    with pytest.raises(BadEnvelope, match="wrong signature"):
        keys.verify("Flights", _with_header(signed_then, "ce_dataschema", b"urn:saga:x:Y:v2"))


# -- timers kept by their deadline's key --------------------------------------------------

_OLD_METADATA = MetaData()
_OLD_TIMERS = Table(
    OLD_TABLE,
    _OLD_METADATA,
    Column("saga_id", String(256), primary_key=True),
    Column("deadline", Integer, primary_key=True),
    Column("state", String(64), nullable=False),
    Column("due_at", Float, nullable=False),
    Index("ix_saga_timers_due", "due_at"),
)
"""The index-keyed timer table as older versions made it."""

_ARMED = [
    ("s1", 0, "requested"),  # deadline 1: requested.FlightBookingFailed
    ("s2", 1, "car_rented"),  # deadline 2: car_rented.PaymentDeclined
    ("s3", 1, "requested"),  # deadline 2 is not one of `requested`: stale
    ("s4", 7, "requested"),  # no deadline 8: stale
]


async def _old_database(url: Any, armed: list[tuple[str, int, str]], due_at: float) -> Database:
    """A started database of the current schema that still has the old timer table, with
    `armed` timers in it and each saga in its timer's state."""
    db = Database(url)
    await db.start()
    async with db.transaction() as conn:
        await conn.run_sync(_OLD_METADATA.create_all)
        for saga_id, index, state in armed:
            await conn.execute(
                insert(_OLD_TIMERS).values(
                    saga_id=saga_id, deadline=index, state=state, due_at=due_at
                )
            )
            await conn.execute(
                insert(tables.saga_state).values(saga_id=saga_id, state=state, updated_at=due_at)
            )
    return db


async def _timers(db: Database) -> set[tuple[str, str, str, float, float | None]]:
    async with db.transaction() as conn:
        rows = (await conn.execute(select(tables.timers))).all()
    return {(r.saga_id, r.deadline, r.state, r.due_at, r.within_s) for r in rows}


async def _has_old_table(db: Database) -> bool:
    async with db.transaction() as conn:
        return bool(await conn.run_sync(lambda c: inspect(c).has_table(OLD_TABLE)))


async def _outbox(db: Database) -> list[tuple[str, str]]:
    """(saga id, event type) of each queued event."""
    async with db.transaction() as conn:
        rows = (await conn.execute(select(tables.outbox))).all()
    return sorted((r.key.decode(), dict(r.headers)["ce_type"]) for r in rows)


def _flights() -> Any:
    import trip_booking.flights

    return trip_booking.flights.Flights()


async def test_index_keyed_timers_move_to_their_keys_and_fire_their_own_deadline(
    db_url: str, tmp_path: Path
) -> None:
    import trip_booking.events

    registry = load_registry(TRIP)
    url = database_url(db_url, f"flights_{uuid.uuid4().hex[:8]}")
    due = time.time() - 5
    db = await _old_database(url, _ARMED, due)
    try:
        assert await move_index_timers(db, registry) == 4
        assert await _timers(db) == {
            ("s1", "requested.FlightBookingFailed", "requested", due, None),
            ("s2", "car_rented.PaymentDeclined", "car_rented", due, None),
            ("s3", old_key(1), "requested", due, None),
            ("s4", old_key(7), "requested", due, None),
        }
        assert not await _has_old_table(db)
        moved = await _timers(db)
        assert await move_index_timers(db, registry) == 0, "a second start has none to move"
        assert await _timers(db) == moved

        # The next deploy reorders the deadlines: each timer still fires its own.
        first, second = registry.state_machine.deadlines
        assert first.emit == "FlightBookingFailed" and second.emit == "PaymentDeclined"
        reordered = dataclasses.replace(
            registry,
            state_machine=dataclasses.replace(registry.state_machine, deadlines=(second, first)),
        )
        runner = ServiceRunner(
            reordered, _flights(), trip_booking.events.EVENT_TYPES, db, EmbeddedBus(tmp_path / "b")
        )
        assert await DeadlineTimers(runner).fire_due(now=time.time()) == 2
        assert await _outbox(db) == [("s1", "FlightBookingFailed"), ("s2", "PaymentDeclined")]
        assert await _timers(db) == set(), "the stale timers are dropped unfired"
    finally:
        await db.stop()


def test_saga_run_moves_old_timers_at_start_and_fires_them(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    registry = load_registry(root / "registry" / "saga.yaml")
    (root / "dbs").mkdir()
    url = database_url(f"sqlite:///{root}/dbs/{{service}}.db", "Flights")

    async def arm() -> None:
        db = await _old_database(url, [("s1", 0, "requested"), ("s4", 7, "requested")], 1.0)
        await db.stop()

    asyncio.run(arm())
    proc = start(root, "Flights", bus=f"embedded:{tmp_path / 'bus.db'}")
    try:
        end = time.monotonic() + 60
        fired: list[tuple[str, str]] = []
        while time.monotonic() < end and not fired:
            assert proc.poll() is None, proc.communicate()[1]
            with sqlite3.connect(root / "dbs" / "flights.db", timeout=30) as conn:
                fired = [
                    (key.decode(), dict(json.loads(headers))["ce_type"])
                    for key, headers in conn.execute("SELECT key, headers FROM saga_outbox")
                ]
            time.sleep(0.2)
        assert fired == [("s1", "FlightBookingFailed")]
        with sqlite3.connect(root / "dbs" / "flights.db", timeout=30) as conn:
            tables_now = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
            left = conn.execute("SELECT saga_id FROM saga_deadline_timers").fetchall()
        assert OLD_TABLE not in tables_now and "saga_deadline_timers" in tables_now
        assert left == [], "the stale timer is dropped, not fired"
        assert registry.state_machine.deadlines[0].emit == "FlightBookingFailed"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


async def test_replicas_starting_together_move_the_timers_once(db_url: str) -> None:
    registry = load_registry(TRIP)
    # A few rounds: the replicas' transactions collide in a different way each time.
    for _ in range(4):
        url = database_url(db_url, f"flights_{uuid.uuid4().hex[:8]}")
        db = await _old_database(url, _ARMED, 1.0)
        others = [Database(url) for _ in range(3)]
        for other in others:
            await other.start()
        try:
            moved = await asyncio.gather(*(move_index_timers(d, registry) for d in [db, *others]))
            assert sorted(moved) == [0, 0, 0, 4]
            assert {row[:2] for row in await _timers(db)} == {
                ("s1", "requested.FlightBookingFailed"),
                ("s2", "car_rented.PaymentDeclined"),
                ("s3", old_key(1)),
                ("s4", old_key(7)),
            }
            assert not await _has_old_table(db)
        finally:
            for d in [db, *others]:
                await d.stop()


def test_a_structured_record_carries_the_version_too(
    trip_v2_types: tuple[Registry, dict[str, Any]],
) -> None:
    registry, types = trip_v2_types
    urn = dataschema(registry.name, "FlightBooked", 1)
    record = _envelope("FlightBooked", _FLIGHT_V1, urn).to_structured_record("t")
    env = Envelope.from_record(record)
    assert env.dataschema == urn
    assert _codec(registry, types).decode(env).record_locator == "ABC123"
    newer = _envelope("FlightBooked", _FLIGHT_V1, dataschema(registry.name, "FlightBooked", 3))
    with pytest.raises(BadEnvelope, match="newer"):
        _codec(registry, types).decode(Envelope.from_record(newer.to_structured_record("t")))
