"""Retention: what each service prunes from its database, and what the log keeps.

Without it the inbox, `saga_skipped`, the sent outbox, `saga_deadline_timers`, the embedded log
and the dead-letter topic grow with every saga ever run. A prune task runs beside each
service's runner, relay and timers (`Application.run`), one pass every
`RetentionSettings.every_s`, deleting in chunks of `chunk` rows, one short transaction
per chunk, so a pass never holds the database (or the embedded log) for long.

What a pass deletes in a service's database:

- **inbox and `saga_skipped` rows older than the dedupe window** (default 7 days) of
  events that the saga's stored state no longer allows (`ServiceMachine.decide`): a
  terminal state allows nothing, a saga that moved past an event does not allow it again,
  and a saga with no state row began nowhere (its events were refused from the initial
  state). Rows of a parked saga stay, and so do rows of events its state still allows
  (in a machine with a cycle, the inbox is what recognises such a copy), whatever their
  age.
- **sent outbox rows** older than `sent_outbox_s` (default 1 hour); unsent rows stay.
- **timers of sagas that ended** (a timer of a saga that moved on is otherwise only
  dropped when it comes due).

Why a duplicate older than the window is still not applied twice: the inbox row that
would have recognised it is gone, but the saga's state row is not, and the row was
pruned only because that state no longer allows the event. The copy is judged by the
state machine from that state, where no transition takes it (`saga validate` refuses any
transition out of a terminal state), so the runner records it as skipped
("not_allowed") and runs no reaction, emits nothing, arms nothing. That is why
**`saga_state` rows are kept**: one short row per saga (its id, state and times) is what
makes the dedupe window safe, and, for ended sagas, the outcome `saga sagas` reports.
Deleting it would make an old copy of a saga's first event begin the saga again.

The log:

- The embedded log (`EmbeddedBus.prune`) deletes records older than `log_retention_s`
  (default 7 days; the dead-letter topic `dead_letter_retention_s`, default 30 days)
  that every consumer group that has committed on the topic has committed past. It never
  deletes a record such a group has not read, nor the last record of a partition (it
  carries the next offset); a group that has never committed (a service added later)
  starts from what is left, as on Kafka.
- On Kafka, `ensure_topics` creates the events topic with `retention.ms` =
  `log_retention_s` and the dead-letter topic with `dead_letter_retention_s` (and
  `segment.ms` at most a day, so that segments roll and can be deleted): dead
  letters are the evidence of what failed and wait for `saga dlq replay`, so they are
  kept longer. Kafka's retention is by time only, so keep it longer than any outage of a
  consumer group. A topic that exists already keeps its configuration.

The dedupe window must be longer than any re-delivery can take: a copy of an event the
saga's state still allows is always caught (its rows stay); any other copy after the
window is caught by the state machine, as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    Index,
    and_,
    delete,
    exists,
    false,
    or_,
    select,
    tuple_,
)
from sqlalchemy.exc import DBAPIError

from saga_registry.engine import tables
from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses.embedded import EmbeddedBus
from saga_registry.engine.buses.kafka import KafkaBus
from saga_registry.engine.database import Database
from saga_registry.engine.runner import ServiceRunner
from saga_registry.registry.model import Registry

log = logging.getLogger("saga.retention")

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long each kind of record is kept, and how often and how much is pruned."""

    dedupe_window_s: float = 7 * DAY_S
    """Inbox and skipped rows older than this are deleted once the saga's state no longer
    allows their event."""
    sent_outbox_s: float = 3600.0
    """Sent outbox rows older than this are deleted (kept a while for `saga trace`)."""
    log_retention_s: float = 7 * DAY_S
    """Records of the events topic: embedded log and Kafka's `retention.ms`."""
    dead_letter_retention_s: float = 30 * DAY_S
    """Records of the dead-letter topic (evidence, waiting for `saga dlq replay`)."""
    every_s: float = 60.0
    """Seconds between prune passes; 0 turns pruning off."""
    chunk: int = 1000
    """Rows deleted per transaction."""


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with an optional unit s, m, h or d (`90`, `60s`,
    `7d`); raises ValueError with a one-line reason otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 60s, 30m, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass
class Pruned:
    """Rows deleted by one pass, per table."""

    inbox: int = 0
    skipped: int = 0
    outbox: int = 0
    timers: int = 0

    @property
    def total(self) -> int:
        """Every row deleted."""
        return self.inbox + self.skipped + self.outbox + self.timers


_INDEXES = (
    *(ix for ix in tables.inbox.indexes if ix.name == "ix_saga_inbox_received"),
    *(ix for ix in tables.skipped.indexes if ix.name == "ix_saga_skipped_at"),
)


class ServicePruner:
    """Prunes one service's database (see the module's docstring for what and why)."""

    def __init__(
        self,
        name: str,
        db: Database,
        terminal: frozenset[str],
        settings: RetentionSettings,
        applies: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.name = name
        self.db = db
        self.terminal = terminal
        self.settings = settings
        self.applies = None if applies is None else {s: e for s, e in applies.items() if e}
        """Per stored state, the event types the service still applies from it (none
        from a terminal state); without it, every event of a saga in flight."""
        self._indexed = False
        self._stop: asyncio.Event | None = None

    @classmethod
    def of(cls, runner: ServiceRunner, settings: RetentionSettings) -> ServicePruner:
        """The pruner of `runner`'s database."""
        machine = runner.machine
        states = [s.name for s in runner.registry.state_machine.states]
        return cls(runner.name, runner.db, machine.terminal, settings, machine.applies(states))

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every `every_s` until `stop` is set; a failing pass is logged and
        tried again at the next (nothing it leaves is wrong, only not yet deleted).
        A pass in hand stops between two chunks when `stop` is set."""
        self._stop = stop
        await _every(stop, self.settings.every_s, self.prune_once, f"{self.name}: prune")

    async def prune_once(self, now: float | None = None) -> Pruned:
        """One pass at time `now` (default: the clock); returns what it deleted."""
        now = time.time() if now is None else now
        if not self._indexed:
            await self._ensure_indexes()
        s = self.settings
        window = now - s.dedupe_window_s
        i, k, o, t = (tables.inbox.alias(), tables.skipped.alias(), tables.outbox, tables.timers)
        i_keys = select(i.c.event_id, i.c.source).where(
            i.c.received_at < window, self._refused(i.c.saga_id, i.c.event_type)
        )
        k_keys = select(k.c.id).where(k.c.at < window, self._refused(k.c.saga_id, k.c.event_type))
        o_keys = select(o.c.id).where(o.c.sent_at.is_not(None), o.c.sent_at < now - s.sent_outbox_s)
        state = tables.saga_state.c
        t2 = tables.timers.alias()
        t_keys = select(t2.c.saga_id, t2.c.deadline).where(
            exists().where(state.saga_id == t2.c.saga_id, state.state.in_(sorted(self.terminal)))
        )
        inbox = tables.inbox
        pruned = Pruned(
            inbox=await self._chunks(
                lambda n: delete(inbox).where(
                    tuple_(inbox.c.event_id, inbox.c.source).in_(i_keys.limit(n))
                )
            ),
            skipped=await self._chunks(
                lambda n: delete(tables.skipped).where(tables.skipped.c.id.in_(k_keys.limit(n)))
            ),
            outbox=await self._chunks(
                lambda n: delete(o).where(o.c.id.in_(o_keys.correlate(None).limit(n)))
            ),
            timers=await self._chunks(
                lambda n: delete(t).where(tuple_(t.c.saga_id, t.c.deadline).in_(t_keys.limit(n)))
            ),
        )
        if pruned.total:
            log.info(
                "%s: pruned %d inbox, %d skipped, %d sent outbox, %d timer rows",
                self.name,
                pruned.inbox,
                pruned.skipped,
                pruned.outbox,
                pruned.timers,
            )
        return pruned

    def _refused(
        self, saga_id: ColumnElement[str], event_type: ColumnElement[str]
    ) -> ColumnElement[bool]:
        """SQL: a copy of an event `event_type` of saga `saga_id` would be refused by the
        state machine (the saga's stored state, if any, no longer allows that event), and
        the saga is not parked."""
        state, parked = tables.saga_state.c, tables.parked.c
        if self.applies is not None:
            allows = or_(
                false(),
                *(
                    and_(state.state == s, event_type.in_(sorted(events)))
                    for s, events in sorted(self.applies.items())
                ),
            )
        else:  # no projection given: any state but a terminal one may allow it
            allows = state.state.not_in(sorted(self.terminal))
        return ~exists().where(state.saga_id == saga_id, allows) & ~exists().where(
            parked.saga_id == saga_id
        )

    async def _chunks(self, statement: Callable[[int], Delete]) -> int:
        """Run `statement(chunk)` in its own transaction until a chunk deletes fewer
        rows than `chunk`; returns the rows deleted."""
        total = 0
        chunk = self.settings.chunk
        while True:
            async with self.db.transaction() as conn:
                result = await conn.execute(statement(chunk))
            total += result.rowcount
            if result.rowcount < chunk or (self._stop is not None and self._stop.is_set()):
                return total
            await asyncio.sleep(0)  # let the runner's transactions in between chunks

    async def _ensure_indexes(self) -> None:
        """The indexes a prune scan needs, on a database made before they existed
        (`create_all` makes missing tables, never missing indexes of existing ones)."""
        for index in _INDEXES:
            # A replica starting at the same time may create it first.
            with contextlib.suppress(DBAPIError):
                async with self.db.transaction() as conn:
                    await conn.run_sync(_create_index, index)
        self._indexed = True


def _create_index(conn: Connection, index: Index) -> None:
    index.create(conn, checkfirst=True)


class LogPruner:
    """Prunes the embedded log's records (`EmbeddedBus.prune`) on a schedule."""

    def __init__(self, bus: EmbeddedBus, dead_letter_topic: str, settings: RetentionSettings):
        self.bus = bus
        self.dead_letter_topic = dead_letter_topic
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every `every_s` until `stop` is set (which also ends a pass in hand)."""

        async def once() -> int:
            return await self.prune_once(stop=stop)

        await _every(stop, self.settings.every_s, once, "embedded log: prune")

    async def prune_once(self, now: float | None = None, stop: asyncio.Event | None = None) -> int:
        """One pass; returns the records deleted."""
        s = self.settings
        deleted = await self.bus.prune(
            s.log_retention_s,
            per_topic={self.dead_letter_topic: s.dead_letter_retention_s},
            now=now,
            chunk=s.chunk,
            stop=stop,
        )
        if deleted:
            log.info("embedded log: pruned %d records", deleted)
        return deleted


def prune_tasks(
    runners: Sequence[ServiceRunner], bus: Bus, settings: RetentionSettings, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The prune tasks of a running application: one per service, and one for the
    embedded log if that is the bus (none if `every_s` is 0)."""
    if settings.every_s <= 0:
        return []
    out = [
        asyncio.create_task(ServicePruner.of(r, settings).run(stop), name=f"{r.name}.retention")
        for r in runners
    ]
    if isinstance(bus, EmbeddedBus) and runners:
        pruner = LogPruner(bus, runners[0].dead_letter_topic, settings)
        out.append(asyncio.create_task(pruner.run(stop), name="log.retention"))
    return out


async def ensure_topics(bus: Bus, registry: Registry, settings: RetentionSettings) -> None:
    """Ensure the registry's two topics; on Kafka, new ones get their `retention.ms`."""
    events, dead = registry.events_topic, registry.dead_letter_topic
    specs = [TopicSpec(events.name, events.partitions), TopicSpec(dead.name, dead.partitions)]
    if isinstance(bus, KafkaBus):
        await bus.ensure_topics(specs, configs=kafka_topic_configs(registry, settings))
    else:
        await bus.ensure_topics(specs)


def kafka_topic_configs(
    registry: Registry, settings: RetentionSettings
) -> dict[str, dict[str, str]]:
    """Per topic name, the configs `ensure_topics` gives a Kafka topic it creates.

    Kafka deletes whole segments only, and by default rolls a segment after 7 days, so a
    record could outlive its retention by that much: `segment.ms` is set to the
    retention, at most a day."""
    return {
        registry.events_topic.name: _retention(settings.log_retention_s),
        registry.dead_letter_topic.name: _retention(settings.dead_letter_retention_s),
    }


def _retention(seconds: float) -> dict[str, str]:
    ms = max(1, round(seconds * 1000))
    return {"retention.ms": str(ms), "segment.ms": str(min(ms, round(DAY_S * 1000)))}


async def _every(
    stop: asyncio.Event, every_s: float, work: Callable[[], Awaitable[object]], what: str
) -> None:
    while not stop.is_set():
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # deleted later instead; never stops the service
            log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
