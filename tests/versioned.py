"""Version 2 of the trip registry, for the tests of event versions: two events changed in
ways that break old readers, each with the upcast that reads version 1 as version 2."""

from __future__ import annotations

from tests.helpers import TRIP


def trip_v2(text: str | None = None) -> str:
    """The trip registry's text (`text`, or the shipped file) with:

    - TripRequested at version 2: `car_class` has its own enum, `economy` renamed `mini`;
      `notes` renamed `remarks`; a new required `channel`, `web` for older events.
    - FlightBooked at version 2: `pnr` renamed `record_locator`; a new required
      `fare_class`, `economy` for older events.
    """
    text = TRIP.read_text(encoding="utf-8") if text is None else text
    text = _swap(
        text,
        "  TripRequested:\n    kind: domain\n",
        "  TripRequested:\n    kind: domain\n    version: 2\n"
        "    upcast:\n"
        "      - from: 1\n"
        "        rename: {notes: remarks}\n"
        "        values: {car_class: {economy: mini}}\n"
        "        default: {channel: web}\n",
    )
    text = _swap(
        text,
        "      required: [booking_id, customer_id, travellers, itinerary, nights, car_class, "
        "budget, currency]\n",
        "      required: [booking_id, customer_id, travellers, itinerary, nights, car_class, "
        "budget, currency, channel]\n",
    )
    text = _swap(
        text,
        "        car_class: {$ref: CarClass}\n        budget: {$ref: Money}\n"
        "        currency: {$ref: Currency}\n        notes: {type: string, maxLength: 500}\n",
        "        car_class: {type: string, enum: [mini, compact, suv, van]}\n"
        "        budget: {$ref: Money}\n        currency: {$ref: Currency}\n"
        "        remarks: {type: string, maxLength: 500}\n"
        "        channel: {type: string, enum: [web, app]}\n",
    )
    text = _swap(
        text,
        "  FlightBooked:\n    kind: domain\n",
        "  FlightBooked:\n    kind: domain\n    version: 2\n"
        "    upcast:\n"
        "      - from: 1\n"
        "        rename: {pnr: record_locator}\n"
        "        default: {fare_class: economy}\n",
    )
    text = _swap(
        text,
        "      required: [booking_id, pnr, segments, fare, currency]\n"
        "      properties:\n        booking_id: {$ref: Id}\n"
        '        pnr: {type: string, pattern: "^[A-Z0-9]{6}$"}\n',
        "      required: [booking_id, record_locator, segments, fare, currency, fare_class]\n"
        "      properties:\n        booking_id: {$ref: Id}\n"
        '        record_locator: {type: string, pattern: "^[A-Z0-9]{6}$"}\n'
        "        fare_class: {type: string, enum: [economy, business]}\n",
    )
    return text


def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the trip registry changed: {old!r} is not there once"
    return text.replace(old, new)
