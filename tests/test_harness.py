"""The `saga` pytest fixture (saga_registry.testing), used the way a project uses it: a
project is generated from a registry into a temporary folder, its reactions written, its
tests written, and `python -m pytest` run there in a subprocess. The plugin comes in
through its `pytest11` entry point (the package is installed), nothing else."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from saga_registry.codegen import write
from saga_registry.registry import load_registry

REGISTRIES = Path(__file__).parent / "registries"

# The project's pytest settings: auto mode, and every warning an error, so that a fixture
# leaking a task, a connection or an unawaited coroutine fails the run.
PYPROJECT = """\
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
"""

# Runs after the `saga` fixture's teardown (an autouse fixture is set up first): nothing
# the harness started may still be running.
CONFTEST = """\
import asyncio

import pytest_asyncio


@pytest_asyncio.fixture(autouse=True)
async def no_leaked_tasks():
    yield
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not left, f"tasks left running after the saga fixture: {left}"
"""

# Trip booking's reactions, each decision driven by the trip's payload: destination NOF has
# no flight, NOH no hotel, NOC no car; a van costs more than the card allows.
TRIP_HANDLERS = {
    "booking.py": """
        from handlers.base.booking import BookingBase
        from handlers.events import (
            FlightBookingFailed, FlightCancelled, PaymentCaptured, TripCancelled, TripConfirmed,
        )


        class Booking(BookingBase):
            async def on_flight_booking_failed(self, event: FlightBookingFailed, ctx):
                return TripCancelled(
                    booking_id=event.booking_id, cause="FlightBookingFailed", reason=event.reason
                )

            async def on_flight_cancelled(self, event: FlightCancelled, ctx):
                return TripCancelled(
                    booking_id=event.booking_id, cause=event.cause, reason="compensated"
                )

            async def on_payment_captured(self, event: PaymentCaptured, ctx):
                b = event.booking_id
                return TripConfirmed(
                    booking_id=b, pnr="ABC123", reservation_id=f"R-{b}", rental_id=f"C-{b}",
                    total=event.amount, currency=event.currency,
                )
    """,
    "flights.py": """
        from handlers.base.flights import FlightsBase
        from handlers.events import (
            FlightBooked, FlightBookingFailed, FlightCancelled, HotelBookingFailed,
            HotelCancelled, TripRequested,
        )


        class Flights(FlightsBase):
            async def on_trip_requested(self, event: TripRequested, ctx):
                it = event.itinerary
                if it.destination == "NOF":
                    return FlightBookingFailed(booking_id=event.booking_id, reason="no_seats")
                return FlightBooked.from_dict({
                    "booking_id": event.booking_id, "pnr": "ABC123", "fare": 30000,
                    "currency": event.currency,
                    "segments": [{"flight_no": "LH123", "origin": it.origin,
                                  "destination": it.destination, "departs_at": it.depart_on}],
                })

            async def on_hotel_booking_failed(self, event: HotelBookingFailed, ctx):
                return FlightCancelled(
                    booking_id=event.booking_id, pnr="ABC123", cause="HotelBookingFailed"
                )

            async def on_hotel_cancelled(self, event: HotelCancelled, ctx):
                return FlightCancelled(booking_id=event.booking_id, pnr="ABC123", cause=event.cause)
    """,
    "hotels.py": """
        from handlers.base.hotels import HotelsBase
        from handlers.events import (
            CarRentalFailed, CarReturned, FlightBooked, HotelBooked, HotelBookingFailed,
            HotelCancelled,
        )


        class Hotels(HotelsBase):
            async def on_flight_booked(self, event: FlightBooked, ctx):
                town = event.segments[-1].destination
                if town == "NOH":
                    return HotelBookingFailed(booking_id=event.booking_id, reason="no_rooms")
                return HotelBooked(
                    booking_id=event.booking_id, reservation_id=f"R-{event.booking_id}",
                    hotel_name=f"Hotel {town}", nights=3, rate=20000, currency=event.currency,
                )

            async def on_car_rental_failed(self, event: CarRentalFailed, ctx):
                return HotelCancelled(
                    booking_id=event.booking_id, reservation_id=f"R-{event.booking_id}",
                    cause="CarRentalFailed",
                )

            async def on_car_returned(self, event: CarReturned, ctx):
                return HotelCancelled(
                    booking_id=event.booking_id, reservation_id=f"R-{event.booking_id}",
                    cause=event.cause,
                )
    """,
    "car_rental.py": """
        from handlers.base.car_rental import CarRentalBase
        from handlers.events import (
            CarRentalFailed, CarRented, CarReturned, HotelBooked, PaymentDeclined,
        )

        PRICES = {"economy": 9000, "compact": 12000, "suv": 20000, "van": 90000}


        class CarRental(CarRentalBase):
            async def on_hotel_booked(self, event: HotelBooked, ctx):
                if event.hotel_name.endswith("NOC"):
                    return CarRentalFailed(booking_id=event.booking_id, reason="no_cars")
                car = "van" if event.hotel_name.endswith("VAN") else "economy"
                return CarRented(
                    booking_id=event.booking_id, rental_id=f"C-{event.booking_id}",
                    car_class=car, pickup_at="LIS", price=PRICES[car], currency=event.currency,
                )

            async def on_payment_declined(self, event: PaymentDeclined, ctx):
                return CarReturned(
                    booking_id=event.booking_id, rental_id=f"C-{event.booking_id}",
                    cause="PaymentDeclined",
                )
    """,
    "billing.py": """
        from handlers.base.billing import BillingBase
        from handlers.events import CarRented, PaymentCaptured, PaymentDeclined

        CARD_LIMIT = 50000


        class Billing(BillingBase):
            async def on_car_rented(self, event: CarRented, ctx):
                if event.price > CARD_LIMIT:
                    return PaymentDeclined(
                        booking_id=event.booking_id, reason="insufficient_funds"
                    )
                return PaymentCaptured(
                    booking_id=event.booking_id, payment_id=f"P-{event.booking_id}",
                    amount=event.price + 50000, currency=event.currency,
                )
    """,
    "notifications.py": """
        from handlers.base.notifications import NotificationsBase


        class Notifications(NotificationsBase):
            async def on_trip_confirmed(self, event, ctx):
                return None

            async def on_trip_cancelled(self, event, ctx):
                return None
    """,
}

TRIP_TESTS = """
from handlers.events import TripRequested

HAPPY = ["TripRequested", "FlightBooked", "HotelBooked", "CarRented", "PaymentCaptured",
         "TripConfirmed"]


def trip(booking_id, destination="LIS"):
    return TripRequested.from_dict({
        "booking_id": booking_id, "customer_id": "c1",
        "travellers": [{"full_name": "Ada Lovelace", "passport_no": "P123456"}],
        "itinerary": {"origin": "BER", "destination": destination, "depart_on": "2027-05-01"},
        "nights": 3, "car_class": "economy", "budget": 100000, "currency": "EUR",
    })
"""


def _dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def make_project(root: Path, registry: Path, handlers: dict[str, str]) -> Path:
    """A project at `root`: `registry` as registry/saga.yaml, its generated code, the given
    owned reaction modules (replacing the stubs) and the pytest settings."""
    (root / "registry").mkdir(parents=True)
    target = root / "registry" / "saga.yaml"
    shutil.copy(registry, target)
    # Without the generated outcome tests: these tests write their own.
    write(load_registry(target), target, root, render=False, tests=False)
    for module, text in handlers.items():
        (root / "handlers" / module).write_text(_dedent(text))
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    return root


def run_pytest(
    root: Path, tests: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pytest` in `root` on a test file with `tests` as its body."""
    (root / "tests" / "test_saga.py").write_text(tests)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "SAGA_REGISTRY")},
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """pytest's summary line as {outcome: count}."""
    found = re.findall(r"(\d+) (passed|failed|error|errors)\b", result.stdout)
    return {kind.rstrip("s") if kind == "errors" else kind: int(n) for n, kind in found}


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.fixture
def trip_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "trips", REGISTRIES / "trip_booking.yaml", TRIP_HANDLERS)


# The trip tests a project would write, run in one pytest session (a session starts in
# seconds; each saga ends in about one): some pass, some fail on purpose.
TRIP_SUITE = TRIP_TESTS + _dedent("""
    from handlers.events import TripCancelled

    async def test_confirmed(saga):
        result = await (await saga.start(trip("b1"))).wait()
        assert result.events == HAPPY
        assert (result.state, result.outcome) == ("confirmed", "success")
        assert result.event("TripConfirmed").rental_id == "C-b1"

    async def test_no_hotel_undoes_the_flight(saga):
        result = await (await saga.start(trip("b2", destination="NOH"))).wait()
        assert result.events == ["TripRequested", "FlightBooked", "HotelBookingFailed",
                                 "FlightCancelled", "TripCancelled"]
        assert (result.state, result.outcome) == ("cancelled", "failure")
        assert result.event("TripCancelled").cause == "HotelBookingFailed"

    async def test_expects_a_confirmation_that_never_comes(saga):
        result = await (await saga.start(trip("b3", destination="NOF"))).wait()
        assert result.events == HAPPY

    async def test_asks_for_an_event_the_saga_did_not_have(saga):
        result = await (await saga.start(trip("b4", destination="NOF"))).wait()
        result.event("TripConfirmed")

    async def test_hotel_fails_once(saga):
        failure = saga.fail("Hotels", "FlightBooked", times=1)
        result = await (await saga.start(trip("b5"))).wait()
        assert result.events == HAPPY
        assert (failure.raised, failure.calls) == (1, 2)
        assert await saga.dead_letters() == []

    async def test_hotel_always_fails(saga):
        failure = saga.fail("Hotels", "FlightBooked", times=None, error="hotel system down")
        run = await saga.start(trip("b6"))
        parked = await run.wait_parked()
        assert parked.events == ["TripRequested", "FlightBooked"]
        assert parked.state == "flight_booked" and parked.outcome is None
        assert parked.parked == {"Hotels": "hotel system down"}
        # A batch that fails falls back to one by one: at least max_attempts calls raised.
        assert failure.raised >= saga.settings.runner.max_attempts
        [dead] = await saga.dead_letters()
        assert (dead.service, dead.event_type, dead.saga_id) == ("Hotels", "FlightBooked", "b6")
        assert dead.attempts == saga.settings.runner.max_attempts
        assert dead.error == "hotel system down"

    async def test_waiting_for_an_end_reports_the_parking(saga):
        saga.fail("Hotels", "FlightBooked", times=None)
        await (await saga.start(trip("b7"))).wait()

    async def test_outcome_confirmed(saga):
        result = await saga.run_outcome("confirmed", trip("b8"))
        assert result.state == "confirmed"

    async def test_outcome_after_car_rental_failed(saga):
        await saga.run_outcome("cancelled_after_car_rental_failed", trip("b9", "NOC"))

    async def test_outcome_not_written_yet(saga):
        await saga.run_outcome("cancelled_after_payment_declined", None)

    async def test_outcome_that_takes_another_path(saga):
        await saga.run_outcome("cancelled_after_hotel_booking_failed", trip("b10", "NOF"))

    async def test_unknown_outcome(saga):
        await saga.run_outcome("lost", trip("b11"))

    async def test_start_with_a_cancellation(saga):
        await saga.start(TripCancelled(booking_id="b", cause="PaymentDeclined", reason="x"))
""")


@dataclass(frozen=True)
class Session:
    """One inner pytest run: each test's outcome and failure text."""

    result: subprocess.CompletedProcess[str]

    def outcome(self, test: str) -> str:
        found = re.search(
            rf"^tests/test_saga\.py::{test} (PASSED|FAILED|ERROR)", self.result.stdout, re.M
        )
        assert found, f"no result for {test}\n{report(self.result)}"
        return found.group(1).lower()

    def failure(self, test: str) -> str:
        """The text pytest printed for `test`'s failure."""
        sections = re.split(
            r"^_{3,} (?:ERROR at \w+ of )?(\w+) _{3,}$", self.result.stdout, flags=re.M
        )
        for name, text in zip(sections[1::2], sections[2::2], strict=True):
            if name == test:
                return text
        raise AssertionError(f"no failure printed for {test}\n{report(self.result)}")


@pytest.fixture(scope="module")
def trip_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    root = make_project(
        tmp_path_factory.mktemp("suite") / "trips",
        REGISTRIES / "trip_booking.yaml",
        TRIP_HANDLERS,
    )
    # -vv: one line per test, despite run_pytest's -q.
    return Session(run_pytest(root, TRIP_SUITE, "-vv"))


def test_happy_and_failure_paths_end_with_their_events_in_log_order(trip_session: Session) -> None:
    assert trip_session.outcome("test_confirmed") == "passed"
    assert trip_session.outcome("test_no_hotel_undoes_the_flight") == "passed"
    assert trip_session.outcome("test_outcome_after_car_rental_failed") == "passed"


def test_a_wrong_expectation_fails_with_the_saga_s_own_events(trip_session: Session) -> None:
    wrong = "test_expects_a_confirmation_that_never_comes"
    assert trip_session.outcome(wrong) == "failed"
    assert "'FlightBookingFailed'" in trip_session.failure(wrong)
    missing = "test_asks_for_an_event_the_saga_did_not_have"
    assert trip_session.outcome(missing) == "failed"
    assert (
        "saga b4 had no TripConfirmed event; its events were: TripRequested, "
        "FlightBookingFailed, TripCancelled" in trip_session.failure(missing)
    )


def test_an_injected_failure_is_retried_and_the_saga_recovers(trip_session: Session) -> None:
    assert trip_session.outcome("test_hotel_fails_once") == "passed"


def test_a_failure_every_time_dead_letters_and_parks_the_saga(trip_session: Session) -> None:
    assert trip_session.outcome("test_hotel_always_fails") == "passed"
    test = "test_waiting_for_an_end_reports_the_parking"
    assert trip_session.outcome(test) == "failed"
    assert (
        "saga b7 was parked: Hotels's reaction to FlightBooked failed 5 times "
        "(injected failure of Hotels's reaction to FlightBooked)" in trip_session.failure(test)
    )


def test_outcome_tests_run_the_registry_s_paths(trip_session: Session) -> None:
    assert trip_session.outcome("test_outcome_confirmed") == "passed"
    for test in ("test_outcome_not_written_yet", "test_outcome_that_takes_another_path"):
        assert trip_session.outcome(test) == "failed"
    assert (
        "outcome test 'cancelled_after_payment_declined' is not written yet: fill in the "
        "event that starts a saga taking this path (tests/test_outcomes.py)"
        in trip_session.failure("test_outcome_not_written_yet")
    )
    assert (
        "outcome 'cancelled_after_hotel_booking_failed': expected TripRequested -> "
        "FlightBooked -> HotelBookingFailed -> FlightCancelled -> TripCancelled ending "
        "cancelled; saga b10 took TripRequested -> FlightBookingFailed -> TripCancelled "
        "ending cancelled" in trip_session.failure("test_outcome_that_takes_another_path")
    )
    assert trip_session.outcome("test_unknown_outcome") == "failed"
    assert "unknown outcome 'lost': the registry's outcomes are confirmed, " in (
        trip_session.failure("test_unknown_outcome")
    )


def test_start_refuses_an_event_no_service_initiates(trip_session: Session) -> None:
    test = "test_start_with_a_cancellation"
    assert trip_session.outcome(test) == "failed"
    assert (
        "saga.start(): no service initiates TripCancelled; the registry starts sagas with "
        "TripRequested (Booking)" in trip_session.failure(test)
    )


def test_the_whole_session_counts_its_passes_and_failures(trip_session: Session) -> None:
    assert trip_session.result.returncode == 1, report(trip_session.result)
    assert counts(trip_session.result) == {"passed": 6, "failed": 7}, report(trip_session.result)


def test_the_registry_path_comes_from_the_ini_option(trip_project: Path) -> None:
    (trip_project / "registry" / "saga.yaml").rename(trip_project / "registry" / "trips.yaml")
    tests = TRIP_TESTS + _dedent("""
        async def test_confirmed(saga):
            assert (await (await saga.start(trip("b12"))).wait()).events == HAPPY
    """)
    missing = run_pytest(trip_project, tests)
    assert counts(missing) == {"error": 1}, report(missing)
    assert (
        f"saga fixture: no registry at {trip_project / 'registry' / 'saga.yaml'}: set the ini "
        "option `saga_registry` or SAGA_REGISTRY to its path" in missing.stdout
    ), report(missing)
    found = run_pytest(trip_project, tests, "-o", "saga_registry=registry/trips.yaml")
    assert counts(found) == {"passed": 1}, report(found)
    by_env = run_pytest(trip_project, tests, env={"SAGA_REGISTRY": "registry/trips.yaml"})
    assert counts(by_env) == {"passed": 1}, report(by_env)


def test_strict_mode_needs_only_the_asyncio_mark(trip_project: Path) -> None:
    tests = TRIP_TESTS + _dedent("""
        import pytest

        @pytest.mark.asyncio
        async def test_confirmed(saga):
            assert (await (await saga.start(trip("b13"))).wait()).events == HAPPY
    """)
    result = run_pytest(trip_project, tests, "-o", "asyncio_mode=strict")
    assert counts(result) == {"passed": 1}, report(result)


def test_a_project_mistake_fails_the_test_in_one_line(trip_project: Path) -> None:
    (trip_project / "handlers" / "notifications.py").write_text(
        _dedent("""
            from handlers.base.notifications import NotificationsBase


            class Notifications(NotificationsBase):
                async def on_trip_confirmed(self, event, ctx):
                    return None
        """)
    )
    tests = TRIP_TESTS + _dedent("""
        async def test_confirmed(saga):
            pass
    """)
    result = run_pytest(trip_project, tests)
    assert counts(result) == {"error": 1}, report(result)
    assert (
        "saga harness: handler Notifications in handlers.notifications lacks reaction(s): "
        "on_trip_cancelled" in result.stdout
    ), report(result)
    assert "Traceback" not in result.stdout, report(result)


APPROVAL = """\
version: 1
saga:
  name: approval
  title: Approval
  key: request_id
topics:
  events: {name: approvals.events, partitions: 1}
  dead_letter: {name: approvals.events.dlq, partitions: 1}
services:
  Desk:
    initiates: [ApprovalRequested]
    reacts:
      Approved: {emits: []}
      Rejected: {emits: [RequestClosed]}
  Approver:
    reacts:
      ApprovalRequested:
        emits: [Approved, Rejected]
        defer: true
events:
  ApprovalRequested:
    stage: {en: ApprovalRequested}
    kind: domain
    producer: Desk
    payload:
      required: [request_id, amount]
      properties:
        request_id: {type: string, minLength: 1}
        amount: {type: integer, minimum: 0}
  Approved:
    stage: {en: Approved}
    kind: domain
    producer: Approver
    payload:
      required: [request_id]
      properties:
        request_id: {type: string, minLength: 1}
  Rejected:
    stage: {en: Rejected}
    kind: failure
    producer: Approver
    payload:
      required: [request_id, reason]
      properties:
        request_id: {type: string, minLength: 1}
        reason: {type: string, enum: [declined, timeout]}
  RequestClosed:
    stage: {en: RequestClosed}
    kind: compensation
    producer: Desk
    payload:
      required: [request_id]
      properties:
        request_id: {type: string, minLength: 1}
state_machine:
  initial: new
  states:
    new: {}
    pending: {}
    approved: {terminal: true, outcome: success}
    rejected: {}
    closed: {terminal: true, outcome: failure}
  transitions:
    - {on: ApprovalRequested, from: new, to: pending}
    - {on: Approved, from: pending, to: approved}
    - {on: Rejected, from: pending, to: rejected}
    - {on: RequestClosed, from: rejected, to: closed}
  deadlines:
    - state: pending
      within_s: 86400
      emit: Rejected
      payload: {reason: timeout}
"""

APPROVAL_HANDLERS = {
    "approver.py": """
        from handlers.base.approver import ApproverBase
        from handlers.events import Approved


        class Approver(ApproverBase):
            async def on_approval_requested(self, event, ctx):
                # Small amounts are approved at once; large ones wait for a person.
                return Approved(request_id=event.request_id) if event.amount < 100 else None
    """,
    "desk.py": """
        from handlers.base.desk import DeskBase
        from handlers.events import RequestClosed


        class Desk(DeskBase):
            async def on_approved(self, event, ctx):
                return None

            async def on_rejected(self, event, ctx):
                return RequestClosed(request_id=event.request_id)
    """,
}


def test_advance_fires_a_deadline_without_waiting_for_it(tmp_path: Path) -> None:
    registry = tmp_path / "approval.yaml"
    registry.write_text(APPROVAL)
    root = make_project(tmp_path / "approvals", registry, APPROVAL_HANDLERS)
    tests = _dedent("""
        import time

        from handlers.events import ApprovalRequested

        async def test_a_silent_approver_times_out(saga):
            began = time.monotonic()
            run = await saga.start(ApprovalRequested(request_id="r1", amount=500))
            assert await saga.advance(3600) == 0
            assert await saga.advance(86400) == 1
            result = await run.wait()
            assert result.events == ["ApprovalRequested", "Rejected", "RequestClosed"]
            assert result.event("Rejected").reason == "timeout"
            assert (result.state, result.outcome) == ("closed", "failure")
            assert time.monotonic() - began < 5

        async def test_without_advance_the_saga_waits(saga):
            await (await saga.start(ApprovalRequested(request_id="r2", amount=500))).wait(0.5)
    """)
    result = run_pytest(root, tests)
    assert counts(result) == {"passed": 1, "failed": 1}, report(result)
    assert (
        "saga r2 did not end within 0.5s: states Desk=pending, Approver=pending; "
        "events ApprovalRequested" in result.stdout
    ), report(result)


def test_the_same_tests_run_on_kafka(trip_project: Path, kafka_bootstrap: str) -> None:
    tests = TRIP_TESTS + _dedent("""
        async def test_confirmed(saga):
            assert saga.settings.bus.startswith("kafka://")
            result = await (await saga.start(trip("k1"))).wait(60)
            assert result.events == HAPPY

        async def test_hotel_always_fails(saga):
            saga.fail("Hotels", "FlightBooked", times=None)
            parked = await (await saga.start(trip("k2"))).wait_parked(60)
            assert parked.events == ["TripRequested", "FlightBooked"]
            [dead] = await saga.dead_letters()
            assert dead.service == "Hotels"
    """)
    result = run_pytest(trip_project, tests, f"--saga-bus=kafka://{kafka_bootstrap}")
    assert result.returncode == 0, report(result)
    assert counts(result) == {"passed": 2}, report(result)
