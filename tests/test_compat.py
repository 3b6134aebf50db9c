"""`saga compat` next to live databases: a real `saga run` leaves sagas in flight (parked
at a broken Billing, their CarRented dead-lettered); a breaking registry is refused and
names each stranded saga, timer and dead letter; a compatible one passes. On SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert

from saga_registry.engine import tables
from saga_registry.engine.database import Database, database_url
from tests.helpers import ROOT
from tests.test_saga_run import SAGA, make_project, place, saga_cli, start

SAGAS = 4


def compat(root: Path, db: str, registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "SAGA_BUS": "embedded:bus.db"}
    return subprocess.run(
        [*SAGA, "compat", "--db", db, "--registry", str(registry), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def write_row(db: str, service: str, table: Table, **row: Any) -> None:
    """A row in `service`'s database, as the engine writes it."""
    database = Database(database_url(db, service))
    await database.start()
    try:
        async with database.transaction() as conn:
            await conn.execute(insert(table).values(**row))
    finally:
        await database.stop()


@pytest.fixture
def live(tmp_path: Path, db_url: str) -> tuple[Path, str]:
    """A trip project whose services ran with Billing broken: SAGAS sagas in flight in
    `car_rented`, each parked at Billing with its CarRented dead-lettered."""
    db = db_url.replace("{service}", f"c{secrets.token_hex(3)}_{{service}}")
    root = make_project(tmp_path)
    proc = start(root, "--db", db, fail="Billing")
    try:
        asyncio.run(place(root, SAGAS))
        end = time.monotonic() + 90
        listed = saga_cli(root, "embedded:bus.db", "dlq", "list")
        while listed.stdout.count("\tBilling\t") < SAGAS:
            assert time.monotonic() < end, listed.stdout + listed.stderr
            time.sleep(0.5)
            listed = saga_cli(root, "embedded:bus.db", "dlq", "list")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    # A pending timer: the trip's deadlines never fire with reactions that answer at once,
    # so the run itself arms none.
    timer = {"saga_id": "trip-0", "deadline": "car_rented.PaymentDeclined", "state": "car_rented"}
    asyncio.run(
        write_row(db, "Billing", tables.timers, **timer, due_at=time.time(), within_s=300.0)
    )
    # A saga that ended: Booking saw it confirmed, Notifications holds the state it last
    # judged it in (projections): not in flight.
    now = time.time()
    for service, state in (("Booking", "confirmed"), ("Notifications", "requested")):
        row = {"saga_id": "trip-99", "state": state, "updated_at": now}
        asyncio.run(write_row(db, service, tables.saga_state, **row))
    return root, db


def edited(root: Path, *swaps: tuple[str, str]) -> Path:
    text = (root / "registry" / "saga.yaml").read_text(encoding="utf-8")
    for old, new in swaps:
        assert old in text, old
        text = text.replace(old, new)
    path = root / "next.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_breaking_registry_names_each_stranded_saga(live: tuple[Path, str]) -> None:
    root, db = live
    breaking = edited(
        root,
        # The state three services hold their sagas in is renamed.
        ("    requested:\n", "    asked:\n"),
        ("to: requested}", "to: asked}"),
        ("from: requested,", "from: asked,"),
        ("    - state: requested\n", "    - state: asked\n"),
        # The payment deadline is removed.
        (
            "    - state: car_rented\n      within_s: 300\n      emit: PaymentDeclined\n",
            "    - state: car_rented\n      within_s: 300\n      emit: PaymentDeclined\n"
            "      name: payment_wait\n",
        ),
        # CarRented gains a required field with no version and no default.
        (
            "      required: [booking_id, rental_id, car_class, pickup_at, price, currency]\n",
            "      required: [booking_id, rental_id, car_class, pickup_at, price, currency, "
            "insurance]\n",
        ),
        (
            "        pickup_at: {$ref: Airport}\n",
            "        pickup_at: {$ref: Airport}\n        insurance: {type: boolean}\n",
        ),
    )
    result = compat(root, db, breaking)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    stranded = [line for line in lines if "stranded" in line and line.startswith("breaking")]
    assert sorted(line.split(" saga ")[1].split(" ")[0] for line in stranded) == [
        f"trip-{i}" for i in range(SAGAS)
    ]
    assert all("the registry has no state 'requested' any more" in s for s in stranded)
    # With projections, each service holds the state it last judged the saga in.
    assert all("(Booking, Billing, Notifications)" in s for s in stranded), stranded
    (ended,) = [line for line in lines if line.startswith("notice    stranded")]
    assert "saga trip-99 (Notifications): in 'requested'" in ended and "the saga ended" in ended
    (timer,) = [line for line in lines if "timer_dropped" in line]
    assert "saga trip-0 (Billing)" in timer and "'car_rented.PaymentDeclined'" in timer
    assert "is gone" in timer
    letters = [line for line in lines if "undecodable" in line]
    assert len(letters) == SAGAS, result.stdout
    assert all("'insurance' is a required property" in line for line in letters)
    assert lines[-1].endswith(f"{2 * SAGAS + 1} problems: not safe to deploy")
    doc = json.loads(compat(root, db, breaking, "--json").stdout)
    assert doc["safe"] is False
    assert doc["counts"]["dead letters"] == SAGAS
    assert {f["kind"] for f in doc["findings"]} == {"stranded", "timer_dropped", "undecodable"}


def test_a_compatible_registry_passes(live: tuple[Path, str]) -> None:
    root, db = live
    compatible = edited(
        root,
        # A new optional field, and the payment deadline a minute longer.
        (
            "        pickup_at: {$ref: Airport}\n",
            "        pickup_at: {$ref: Airport}\n        insurance: {type: boolean}\n",
        ),
        ("      within_s: 300\n", "      within_s: 360\n"),
    )
    # An event skipped once, of a type an older registry had.
    skipped = {"event_id": "e1", "event_type": "TripPostponed", "saga_id": "trip-1"}
    asyncio.run(
        write_row(db, "Booking", tables.skipped, **skipped, reason="not_allowed", at=time.time())
    )
    result = compat(root, db, compatible)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith("safe to deploy")
    assert f"read {SAGAS} sagas in flight" in result.stdout
    (notice,) = [line for line in result.stdout.splitlines() if "timer_changed" in line]
    assert "armed for 300 s, the registry now says 360 s" in notice
    (gone,) = [line for line in result.stdout.splitlines() if "unknown_skipped" in line]
    assert "(Booking): 1 skipped TripPostponed event(s) of no event type" in gone


def test_a_registry_that_does_not_validate_is_one_line(live: tuple[Path, str]) -> None:
    """A state that cannot end is refused by validation, before any database is read."""
    root, db = live
    dead_end = edited(
        root,
        ("    - {on: PaymentCaptured, from: car_rented, to: paid}\n", ""),
        ("    - {on: PaymentDeclined, from: car_rented, to: payment_declined}\n", ""),
    )
    result = compat(root, db, dead_end)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: registry {dead_end}: {dead_end}:"), line
