"""`SagaHarness`: every service of a project's registry in one process, on a throwaway bus
and throwaway databases, driven by a test: start sagas, wait for them to end, inject
reaction failures, move the deadline clock, read the dead letters.

Every failure of an expectation is a pytest failure with one plain message (the saga's
states and events so far), not a traceback into the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
from sqlalchemy import func, select

from saga_registry.engine import tables
from saga_registry.engine.app import Application, RunningService
from saga_registry.engine.config import Settings
from saga_registry.engine.database import Database
from saga_registry.engine.deadletter import DeadLetter, letters
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import EngineError
from saga_registry.engine.machine import SagaMachine
from saga_registry.registry.model import Registry
from saga_registry.registry.names import unknown
from saga_registry.registry.outcomes import outcome_paths
from saga_registry.testing.clock import ClockTimers, FakeClock
from saga_registry.testing.deadlines import pending_deadline_hint
from saga_registry.testing.failures import Failure, error_of
from saga_registry.testing.result import SagaResult, envelopes_of, saga_records

_POLL_S = 0.02


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


@dataclass(frozen=True)
class _Copy:
    """One service's copy of a saga."""

    service: str
    state: str | None
    parked: tuple[str, str] | None  # (event id, error) if the saga is parked here
    taken: int  # events of the saga in its inbox
    unsent: int  # rows of its outbox not yet on the bus (any saga)
    takes: frozenset[str]  # the event types it takes in (its projection)

    def needs(self, records: list[Envelope]) -> int:
        """How many of `records` this service takes in."""
        return sum(r.type in self.takes for r in records)


class SagaRun:
    """A saga begun by `SagaHarness.start`."""

    def __init__(self, harness: SagaHarness, saga_id: str, envelope: Envelope) -> None:
        self.harness = harness
        self.saga_id = saga_id
        self.envelope = envelope
        """The envelope of the event that began it."""

    async def wait(self, timeout: float = 10.0) -> SagaResult:
        """Wait until the saga is in a terminal state in every service, every outbox is
        drained and every service has taken every event of the saga; the test fails at
        once if the saga gets parked (a reaction failed every retry), and after `timeout`
        seconds with its states and events so far."""
        return await self.harness._settle(self.saga_id, timeout, parked=False)

    async def wait_parked(self, timeout: float = 10.0) -> SagaResult:
        """Wait until a service has parked the saga (a reaction to one of its events failed
        `settings.runner.max_attempts` times and went to the dead-letter topic) and
        everything else is quiet; its `parked` names the service and the error. The test
        fails if the saga ends instead, or after `timeout` seconds."""
        return await self.harness._settle(self.saga_id, timeout, parked=True)


class SagaHarness:
    """The services of one registry running in this process (see the module doc)."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        """What runs: bus and database URLs, package, and `runner` (its `max_attempts` is
        how many calls of a failing reaction dead-letter its event)."""
        self.registry = registry
        self.app = Application(settings, registry=registry)
        self._machine = SagaMachine(registry)
        self.clock = FakeClock()
        self.failures: list[Failure] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sagas: list[str] = []

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Start every service; a project mistake (missing handler, bad registry) fails
        the test with the engine's one-line message."""
        problem = None
        try:
            await self.app.start()
        except EngineError as exc:
            problem = str(exc).replace(", or run with --allow-stubs", "")
        if problem is not None:
            # Failed outside the `except`, so pytest shows the message once, unchained.
            await self.app.stop()
            _fail(f"saga harness: {problem}")
        for s in self.app.services:
            # Deadlines follow the test's clock, in the application's own timer loop too.
            s.timers = ClockTimers(s.runner, self.clock)
        self._task = asyncio.create_task(self.app.run(self._stop), name="saga-harness")

    async def close(self) -> None:
        """Stop every part, drain the outboxes and close the bus and databases."""
        self._stop.set()
        crashed: BaseException | None = None
        try:
            if self._task is not None:
                try:
                    await self._task
                except Exception as exc:  # reported below, once everything is closed
                    crashed = exc
        finally:
            await self.app.stop()
        if crashed is not None:
            # A service that died during the test (a start hook, a bus error) must not
            # pass unseen in a test that never waited on a saga.
            _fail(f"saga harness: the services stopped with {type(crashed).__name__}: {crashed}")

    # --- driving a saga -------------------------------------------------------------------

    async def start(self, event: Any) -> SagaRun:
        """Begin a saga with `event` (an instance of a generated event class), emitted by
        the service that `initiates` it in the registry."""
        kind = getattr(event, "event_type", None)
        if not isinstance(kind, str) or not callable(getattr(event, "saga_id", None)):
            _fail(
                "saga.start() takes an instance of a generated event class "
                f"({self.settings.package}.events), not {type(event).__name__}"
            )
        starters = [s.name for s in self.registry.services if kind in s.initiates]
        if not starters:
            known = [f"{e} ({s.name})" for s in self.registry.services for e in s.initiates]
            _fail(
                f"saga.start(): no service initiates {kind}; the registry starts sagas with "
                f"{', '.join(known) or 'nothing'}"
            )
        runner = self._service(starters[0]).runner
        try:
            envelope = await runner.initiate(event)
        except EngineError as exc:
            _fail(f"saga.start({kind}): {exc}")
        self._sagas.append(envelope.saga_id)
        return SagaRun(self, envelope.saga_id, envelope)

    def fail(
        self,
        service: str,
        event_type: str,
        times: int | None = 1,
        error: BaseException | str | None = None,
    ) -> Failure:
        """Make the next `times` calls (None: every call) of `service`'s reaction to
        `event_type` raise `error` (an exception, or a message for an `InjectedFailure`).
        A call that raises is retried by the runner; after `settings.runner.max_attempts`
        failed calls the event is dead-lettered and the saga parked in that service.
        Returns the `Failure`, which counts its `calls` and how often it `raised`."""
        if times is not None and times < 1:
            _fail(f"saga.fail(): times must be at least 1 or None (always), not {times}")
        runner = self._service(service).runner
        if event_type not in runner.reacts_to:
            _fail(
                f"saga.fail(): {service} does not react to {event_type}; it reacts to "
                f"{', '.join(runner.reacts_to) or 'nothing'}"
            )
        failure = Failure(service, event_type, times, error_of(service, event_type, error))
        runner.wrap_reaction(event_type, failure.wrap)
        self.failures.append(failure)
        return failure

    async def advance(self, seconds: float, timeout: float = 10.0) -> int:
        """Let every saga begun so far settle (each service has taken each of its events,
        so the timers of the states they wait in are armed), then move the deadline clock
        `seconds` forward and fire every deadline now due, in every service; returns how
        many deadline events were emitted. No test time passes."""
        if seconds < 0:
            _fail(f"saga.advance(): cannot move the clock back ({seconds} s)")
        await self._quiesce(timeout)
        self.clock.advance(seconds)
        fired = 0
        for s in self.app.services:
            fired += await s.timers.fire_due()
        return fired

    async def run_outcome(self, name: str, stimulus: Any, timeout: float = 10.0) -> SagaResult:
        """Run the registry's outcome path `name`: start a saga with `stimulus`, wait for
        it to end and check that its events and terminal state are the path's."""
        outcomes, _ = outcome_paths(self.registry)
        by_name = {o.name: o for o in outcomes}
        if name not in by_name:
            _fail(
                f"unknown outcome {name!r}: the registry's outcomes are "
                f"{', '.join(by_name) or 'none'}"
            )
        if stimulus is None:
            _fail(
                f"outcome test {name!r} is not written yet: fill in the event that starts a "
                "saga taking this path (tests/test_outcomes.py)"
            )
        outcome = by_name[name]
        result = await (await self.start(stimulus)).wait(timeout)
        expected = [step.event for step in outcome.steps]
        if result.events != expected or result.state != outcome.terminal:
            _fail(
                f"outcome {name!r}: expected {' -> '.join(expected)} ending {outcome.terminal}; "
                f"saga {result.saga_id} took {' -> '.join(result.events)} ending {result.state}"
            )
        return result

    async def dead_letters(self) -> list[DeadLetter]:
        """Every record on the dead-letter topic so far, read for people (this test's
        sagas only: the topic is the test's own)."""
        topic = self.registry.dead_letter_topic.name
        return letters(await self._bus.read_all(topic))

    # --- the services inside --------------------------------------------------------------

    def service(self, name: str) -> Any:
        """The running instance of service `name`: the object of the class in the
        project's `handlers/<service>.py`, to read or set what the test needs (its
        options, a fake it calls). An unknown name fails the test with the names known."""
        return self._service(name).service

    def database(self, name: str) -> Database:
        """Service `name`'s `Database` (the engine's tables and the service's own):
        `async with saga.database("Billing").transaction() as conn: ...` reads what its
        reactions wrote. An unknown name fails the test with the names known."""
        return self._service(name).db

    # --- inside ---------------------------------------------------------------------------

    @property
    def _bus(self) -> Any:
        assert self.app.bus is not None, "the harness is not open"
        return self.app.bus

    def _service(self, name: str) -> RunningService:
        for s in self.app.services:
            if s.runner.name == name:
                return s
        _fail(unknown("service", name, [s.runner.name for s in self.app.services]))

    async def _copies(self, saga_id: str) -> list[_Copy]:
        out = []
        for s in self.app.services:
            async with s.db.transaction() as conn:
                state = await conn.scalar(
                    select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == saga_id)
                )
                parked = (
                    await conn.execute(
                        select(tables.parked.c.event_id, tables.parked.c.error).where(
                            tables.parked.c.saga_id == saga_id
                        )
                    )
                ).first()
                taken = await conn.scalar(
                    select(func.count()).where(tables.inbox.c.saga_id == saga_id)
                )
                unsent = await conn.scalar(
                    select(func.count()).where(tables.outbox.c.sent_at.is_(None))
                )
            out.append(
                _Copy(
                    s.runner.name,
                    state,
                    (parked.event_id, parked.error) if parked else None,
                    taken or 0,
                    unsent or 0,
                    s.runner.machine.projection.events,
                )
            )
        return out

    async def _settle(self, saga_id: str, timeout: float, *, parked: bool) -> SagaResult:
        terminal = set(self.registry.state_machine.terminal_states)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._check_running()
            copies = await self._copies(saga_id)
            records = await self._records(saga_id)
            # Each service keeps only its projection of the saga: the saga's own state is
            # the whole machine's over the log, which every service's decisions agree with.
            state = self._machine.replay(e.type for e in records)
            stuck = {c.service: c for c in copies if c.parked}
            drained = all(c.unsent == 0 for c in copies)
            taken = all(c.taken >= c.needs(records) for c in copies if not c.parked)
            if stuck and not parked:
                _fail(f"saga {saga_id} was parked: {self._parked_text(stuck, records)}")
            if not stuck and parked and state in terminal and drained and taken:
                _fail(
                    f"saga {saga_id} ended {state} without being parked; "
                    f"its events: {' -> '.join(e.type for e in records)}"
                )
            settled = bool(stuck) if parked else state in terminal
            if settled and drained and taken:
                return self._result(saga_id, state, records, stuck)
            if loop.time() >= deadline:
                records = await self._records(saga_id)
                hint = await pending_deadline_hint(self.app.services, saga_id, self.clock.now())
                _fail(self._timeout_text(saga_id, timeout, parked, copies, records) + hint)
            await asyncio.sleep(_POLL_S)

    async def _quiesce(self, timeout: float) -> None:
        """Wait until every outbox is drained and every service has taken every event of
        every saga begun here (but where the saga is parked)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._check_running()
            pending = []
            log = await self._bus.read_all(self.registry.events_topic.name)
            for saga_id in self._sagas:
                copies = await self._copies(saga_id)
                records = envelopes_of(log, saga_id)
                if any(c.unsent for c in copies) or any(
                    c.taken < c.needs(records) for c in copies if not c.parked
                ):
                    pending.append((saga_id, copies, records))
            if not pending:
                return
            if loop.time() >= deadline:
                saga_id, copies, records = pending[0]
                _fail(
                    "saga.advance(): the sagas did not settle first; "
                    + self._timeout_text(saga_id, timeout, False, copies, records)
                )
            await asyncio.sleep(_POLL_S)

    def _check_running(self) -> None:
        task = self._task
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            _fail(f"saga harness: the services stopped: {error or 'cancelled'}")

    async def _records(self, saga_id: str) -> list[Envelope]:
        return await saga_records(self._bus, self.registry.events_topic.name, saga_id)

    def _result(
        self,
        saga_id: str,
        state: str,
        records: list[Envelope],
        stuck: Mapping[str, _Copy],
    ) -> SagaResult:
        return SagaResult(
            saga_id=saga_id,
            state=state,
            outcome=self.registry.state_machine.state(state).outcome,
            events=[e.type for e in records],
            records=records,
            event_types=self.app.services[0].runner.event_types,
            parked={name: c.parked[1] for name, c in stuck.items() if c.parked},
        )

    def _parked_text(self, stuck: Mapping[str, _Copy], records: list[Envelope]) -> str:
        types = {e.id: e.type for e in records}
        parts = []
        for name, c in stuck.items():
            assert c.parked is not None
            event_id, error = c.parked
            parts.append(
                f"{name}'s reaction to {types.get(event_id, event_id)} failed "
                f"{self.settings.runner.max_attempts} times ({error})"
            )
        events = " -> ".join(e.type for e in records)
        return f"{'; '.join(parts)}; its events: {events} (use run.wait_parked() to expect this)"

    def _timeout_text(
        self,
        saga_id: str,
        timeout: float,
        parked: bool,
        copies: list[_Copy],
        records: list[Envelope],
    ) -> str:
        goal = "be parked" if parked else "end"
        states = ", ".join(f"{c.service}={c.state or 'unseen'}" for c in copies)
        events = " -> ".join(e.type for e in records) or "none"
        return (
            f"saga {saga_id} did not {goal} within {timeout:g}s: states {states}; events {events}"
        )
