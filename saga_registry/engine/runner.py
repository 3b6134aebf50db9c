"""The service runner: consumes the saga's topic for one service and handles each record
in one database transaction holding the inbox row (dedupe), the saga's new state, the
reaction's own writes and the outbox rows of what it emits.

A service takes in only the events of its projection of the state machine
(`registry.projection`) and judges them from the state it stored exactly as the whole
machine would on the saga's true state; it passes every other event of the registry on
its `ce_type` header, unread. Failures never stop the loop: an undecodable or invalid
record goes to the dead-letter topic at once; a reaction that raises is retried with
exponential backoff, then dead-lettered, and its saga is parked here so that its later
events wait in the dead-letter topic too, in order, until `saga dlq replay`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import answers, rows
from saga_registry.engine.batch import NeedsOneByOne, apply_batch, apply_items
from saga_registry.engine.bus import Bus, Delivery, Owner, Subscription
from saga_registry.engine.codec import EventCodec
from saga_registry.engine.consume import consume, stop_if_damaged
from saga_registry.engine.custody import group_name, record_positions
from saga_registry.engine.database import Database
from saga_registry.engine.deadletter import dead_letter, one_line, passes_by
from saga_registry.engine.deadlines import DeadlineArming
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import (
    BadEnvelope,
    BusUnavailable,
    DatabaseUnavailable,
    ForbiddenEmit,
)
from saga_registry.engine.machine import ServiceMachine, Step
from saga_registry.engine.metrics import Metrics, fields, where
from saga_registry.engine.parking import Parked, hold, park
from saga_registry.engine.reaction import DeliveryContext, inside_reaction, outside_reactions
from saga_registry.engine.relay import OutboxRow
from saga_registry.engine.service import Effects, ServiceBase
from saga_registry.registry.model import Registry

if TYPE_CHECKING:
    from saga_registry.engine.tracing import DeliverySpan, ServiceTracer

log = logging.getLogger("saga.runner")

Reaction = Callable[[Any, Any], Awaitable[Any]]
"""A service's bound reaction method: (event, ctx) -> the event it emits, or None."""


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """How a runner retries and batches."""

    max_attempts: int = 5
    backoff_s: float = 0.05
    backoff_max_s: float = 2.0
    batch: int = 500
    poll_timeout_s: float = 0.2
    max_record_bytes: int = 1_000_000
    """Larger records are dead-lettered unread (their first 64 KiB kept), and a reaction
    may not emit one: no event of a registry needs more, decoding one would cost memory
    and time for nothing, and below Kafka's default 1 MiB request size there is room for
    a dead-letter copy's own headers."""
    commit_every_s: float = 0.1
    """At most this often a consumer commits its offsets (more often costs the broker a
    request per small batch; less often, a restart delivers more again, deduplicated)."""
    batch_transactions: bool = True
    """Handle a poll batch in one database transaction (see `saga_registry.engine.batch`)."""


class ServiceRunner:
    """Runs one service: consume, handle in one transaction, commit the offset."""

    def __init__(
        self,
        registry: Registry,
        service: ServiceBase,
        event_types: Mapping[str, Any],
        db: Database,
        bus: Bus,
        *,
        settings: RunnerSettings | None = None,
        metrics: Metrics | None = None,
        on_committed: Callable[[Sequence[OutboxRow]], None] | None = None,
    ) -> None:
        self.registry = registry
        self.name: str = service.service_name
        self.service = service
        self.event_types = event_types
        self.db = db
        self.bus = bus
        self.settings = settings or RunnerSettings()
        self.metrics = metrics or Metrics()
        self.machine = ServiceMachine(registry, self.name)
        """The registry's state machine as this service follows it (its projection)."""
        self.group = group_name(registry, self.name)
        self.topic = registry.events_topic.name
        self.dead_letter_topic = registry.dead_letter_topic.name
        self._reactions: Mapping[str, tuple[str, ...]] = service.reactions
        self._handlers: dict[str, Reaction] = {
            event: getattr(service, method) for event, method in service.handler_names.items()
        }
        self.deadlines = DeadlineArming(registry, self.name, self.machine)
        spec = registry.service(self.name)
        self._deferring = {r.event for r in spec.reactions if r.defer}
        self.answers = {e for r in self._deferring for e in self._reactions[r]}
        """The event types this service may give as a deferred reaction's late answer."""
        self.initiates = spec.initiates
        self._on_committed = on_committed or _nothing_to_publish
        self.codec = EventCodec(
            registry, self.name, event_types, self._reactions, self._deferring, self.topic
        )
        """How deliveries become events and emitted events records."""
        self.source = self.codec.source
        self.subscription: Subscription | None = None
        """The consumer's subscription while it has one (for its lag, `engine.prometheus`)."""
        self.owner: Owner | None = None
        """The database as the owner of the group's offsets (`custody`), if checked."""
        self.tracing: ServiceTracer | None = None
        """This service's spans when the process traces (`engine.tracing`); None: off."""
        # Generated bases subclass ServiceBase; a class written by hand may not, and
        # then has no `answer` to give.
        if isinstance(service, ServiceBase):
            service.bind_runtime(self)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set: see `engine.consume.consume`."""
        await consume(self, stop)

    def needs(self, delivery: Delivery) -> bool:
        """Whether this service takes `delivery` in: False for an event of the registry
        outside its projection (told by the `ce_type` header, the value left unread),
        which it passes without touching the database."""
        if delivery.unreadable is not None:
            return True
        kind = delivery.record.header("ce_type")
        return kind is None or kind not in self.machine.passes

    async def handle_batch(self, batch: Sequence[Delivery], passed: Sequence[Delivery] = ()) -> int:
        """Handle deliveries in order; never raises for a bad record or a failing reaction.
        Returns how many it took in (`needs`); the others are passed. When it took any,
        the database's marks (`engine.custody`) are past `batch` and the deliveries
        `passed` before it, ready for the offsets to be committed.

        The batch goes in one transaction with the marks (`engine.batch`) unless
        `batch_transactions` is off or something in it needs the one-by-one path; then
        each delivery gets its own transaction, with retries, dead-lettering and parking.
        What the transactions emitted is handed to the relay once they commit."""
        needed: list[Delivery] = []
        unneeded: list[tuple[Delivery, str]] = []
        for d in batch:
            if self.needs(d):
                needed.append(d)
            else:
                unneeded.append((d, "unneeded"))
        if unneeded:
            self.metrics.delivered(self.name, unneeded, time.time())
        if not needed:
            return 0
        if self.settings.batch_transactions and len(needed) > 1:
            try:
                outcomes, emitted, spans = await apply_batch(self, needed, [*passed, *batch])
            except asyncio.CancelledError:
                raise
            except _INFRASTRUCTURE:
                raise
            except NeedsOneByOne:
                pass
            except Exception as exc:  # a reaction failed: its retries happen one by one
                log.debug(
                    "%s: batch of %d falls back to one by one: %s", self.name, len(needed), exc
                )
            else:
                self._on_committed(emitted)
                if spans is not None:
                    for span, outcome in zip(spans, outcomes, strict=True):
                        span.end(outcome)
                self.metrics.delivered(self.name, zip(needed, outcomes, strict=True), time.time())
                return len(needed)
        for delivery in needed:
            await self.handle(delivery)
        await record_positions(self.db, [*passed, *batch])
        return len(needed)

    async def handle(self, delivery: Delivery) -> str:
        """Handle one delivery; returns what happened (applied, duplicate, skipped, dead,
        unneeded: outside the projection, passed: a replayed copy of another service's
        dead letter)."""
        passing = (
            "unneeded"
            if not self.needs(delivery)
            else "passed"
            if passes_by(delivery, self.name)
            else None
        )
        if passing is not None:
            self.metrics.delivered(self.name, [(delivery, passing)], time.time())
            return passing
        size = delivery.record.size()
        if size > self.settings.max_record_bytes:
            too_large = BadEnvelope(
                f"record of {size} bytes exceeds the limit of {self.settings.max_record_bytes}"
            )
            await self._dead_letter(
                delivery, too_large, 0, keep_bytes=_KEEP_BYTES, span=self._span(delivery, None)
            )
            return "dead"
        try:
            envelope, event = self.codec.read(delivery)
        except BadEnvelope as exc:
            await self._dead_letter(delivery, exc, 0, span=self._span(delivery, None))
            return "dead"
        # One span for every attempt: an attempt that fails is an event of it; one cut
        # short by an outage is never ended (so never exported), and the delivery comes again.
        span = None if self.tracing is None else self.tracing.consume(delivery, envelope)
        spans = None if span is None else [span]
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.db.transaction() as conn:
                    (outcome,), emitted = await apply_items(
                        self, conn, [(delivery, envelope, event)], alone=True, spans=spans
                    )
                self._on_committed(emitted)
                self.metrics.delivered(self.name, [(delivery, outcome)], time.time())
                if span is not None:
                    span.end(outcome)
                return outcome
            except asyncio.CancelledError:
                raise
            except Parked as exc:
                await self._dead_letter(delivery, exc, attempts=0, span=span)
                await hold(self.db, envelope, delivery)
                return "dead"
            except _INFRASTRUCTURE as exc:
                # The database or the bus is away: not the reaction's fault. The consumer
                # loop pauses and resubscribes; nothing is dead-lettered or parked for it.
                stop_if_damaged(self, exc)
                raise
            except Exception as exc:  # any reaction error is retried, then parked
                stop_if_damaged(self, exc)
                if attempt >= self.settings.max_attempts:
                    await self._dead_letter(delivery, exc, attempts=attempt)
                    await park(self.db, envelope, exc)
                    if span is not None:
                        span.dead_lettered(exc, attempt)
                        span.parked(exc)
                        span.end("dead")
                    return "dead"
                delay = min(
                    self.settings.backoff_s * 2 ** (attempt - 1), self.settings.backoff_max_s
                )
                self.metrics.inc("retried", self.name, event_type=envelope.type)
                if span is not None:
                    span.retried(exc, attempt)
                await asyncio.sleep(delay)

    @property
    def reacts_to(self) -> tuple[str, ...]:
        """The event types this service reacts to."""
        return tuple(self._handlers)

    def wrap_reaction(self, event_type: str, wrap: Callable[[Reaction], Reaction]) -> None:
        """Replace the reaction to `event_type` by `wrap(reaction)`, e.g. to make it fail
        in a test (`saga_registry.testing`); raises KeyError for an event it does not
        react to."""
        self._handlers[event_type] = wrap(self._handlers[event_type])

    async def react(
        self,
        conn: AsyncConnection,
        env: Envelope,
        event: Any,
        step: Step,
        span: DeliverySpan | None = None,
    ) -> Envelope | None:
        """Run this service's reaction to `env`, which made `step`, if it has one, inside
        `conn`'s transaction; returns the envelope of what it emits (checked, not yet
        written to the outbox). Traced, the reaction runs with `span` current and what it
        emits carries `span`'s context."""
        handler = self._handlers.get(env.type)
        if handler is None:
            return None
        state = step.target or step.source
        deadlines = tuple(self.machine.deadlines_in(state))
        context = DeliveryContext(env.saga_id, env.id, self.name, conn, state, deadlines)
        started = time.perf_counter() if self.metrics.timed else 0.0
        with inside_reaction(f"{self.name}'s reaction to {env.type}"):
            if span is None:
                emitted = await handler(event, context)
            else:
                with span.current():
                    emitted = await handler(event, context)
        if started:
            self.metrics.reaction(self.name, env.type, time.perf_counter() - started)
        return self.codec.emitted_envelope(env, emitted, None if span is None else span.carrier)

    async def initiate(self, event: Any, effects: Effects | None = None) -> Envelope:
        """Emit `event` outside any reaction: see `engine.answers.initiate`."""
        outside_reactions("initiate()")
        return await answers.initiate(self, event, effects)

    async def answer(self, event: Any, effects: Effects | None = None) -> Envelope:
        """Emit the late answer of a deferred reaction: see `engine.answers.answer`."""
        outside_reactions("answer()")
        return await answers.answer(self, event, effects)

    def committed(self, emitted: Sequence[OutboxRow]) -> None:
        """Hand the outbox rows a transaction of this service just committed to the
        relay, to be published at once."""
        self._on_committed(emitted)

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction on the service's database (`ServiceBase.transaction`)."""
        outside_reactions("transaction()")
        return self.db.transaction()

    async def write_outbox(
        self, conn: AsyncConnection, env: Envelope, now: float
    ) -> dict[str, Any]:
        """Queue `env` for the relay inside the caller's transaction; returns the row,
        to be handed to `committed` once the transaction commits."""
        row = self.outbox_row(env, now)
        await rows.insert_outbox(conn, [row])
        return row

    def outbox_row(self, env: Envelope, now: float) -> dict[str, Any]:
        """The outbox row that queues `env` for the relay; raises `ForbiddenEmit` for a
        record larger than consumers take (it would sit in the outbox, unsendable or
        dead-lettered by every consumer: better refused while the cause can be retried)."""
        record = self.codec.record_of(env)
        size = record.size()
        if size > self.settings.max_record_bytes:
            raise ForbiddenEmit(
                f"{self.name} emitted {env.type} for saga {env.saga_id} of {size} bytes, "
                f"over the limit of {self.settings.max_record_bytes}"
            )
        return {
            "event_id": env.id,
            "topic": record.topic,
            "key": record.key,
            "headers": [[k, v.decode()] for k, v in record.headers],
            "value": record.value,
            "created_at": now,
            "sent_at": None,
        }

    def _span(self, delivery: Delivery, envelope: Envelope | None) -> DeliverySpan | None:
        return None if self.tracing is None else self.tracing.consume(delivery, envelope)

    async def _dead_letter(
        self,
        delivery: Delivery,
        exc: BaseException,
        attempts: int,
        keep_bytes: int | None = None,
        span: DeliverySpan | None = None,
    ) -> None:
        """Publish `delivery` to the dead-letter topic; end `span` so, if given."""
        record = dead_letter(
            delivery, self.dead_letter_topic, self.name, exc, attempts, keep_bytes=keep_bytes
        )
        await self.bus.publish([record])
        self.metrics.delivered(self.name, [(delivery, "dead_lettered")], time.time())
        log.warning(
            "%s: dead-lettered %s after %d attempt(s): %s: %s",
            self.name,
            where(delivery),
            attempts,
            type(exc).__name__,
            one_line(exc),
            extra={**fields(self.name, delivery), "error": f"{type(exc).__name__}: {exc}"},
        )
        if span is not None:
            span.dead_lettered(exc, attempts)
            span.end("dead")


# What a dead-lettered oversized record keeps: enough to see what it was, small enough for
# any broker's default message size limit.
_KEEP_BYTES = 64 << 10


def _nothing_to_publish(emitted: Sequence[OutboxRow]) -> None:
    """Without a relay, the outbox keeps the rows for whoever drains it."""


_INFRASTRUCTURE = (OperationalError, InterfaceError, DatabaseUnavailable, BusUnavailable)
