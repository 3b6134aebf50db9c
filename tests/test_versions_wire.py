"""Event versions on the wire: a consumer reads an older version through the upcasts and
refuses a newer one; every record carries its version; a signature covers it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import sys
import uuid
from typing import Any

import pytest

from saga_registry.codegen import write
from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.codec import EventCodec
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope
from saga_registry.engine.signing import Key, Keyring
from saga_registry.registry import Registry, load_registry
from saga_registry.registry.versions import dataschema, version_of
from tests.autoreact import payload
from tests.helpers import TRIP
from tests.versioned import trip_v2

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
