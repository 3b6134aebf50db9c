"""`saga compat`: a registry about to be deployed, checked against what the live services
hold, before it strands anything.

What is read, and what makes a finding:
- each service's sagas in flight: a state the registry no longer has (a registry that
  validates lets every state it has reach a terminal one, so that is the only way a
  registry strands a saga in its state);
- pending deadline timers: a deadline that is gone or moved to another state (the timer
  would be dropped unfired), or whose `within_s` changed (it fires when it was armed for);
  timers still kept by index by an older version;
- events that will still be read after the deploy: unsent outbox rows, the events held
  behind parked sagas, and the dead letters not replayed yet: each must decode under the
  new registry (its type known, its version readable, its payload valid once upcast);
- skipped events whose type the registry no longer has (`saga trace` cannot name them).

Nothing here writes. A database that does not exist is noted, never created.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import text

from saga_registry.engine import tables
from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.deadletter import SERVICE, is_marker, replays
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope
from saga_registry.engine.inspect import Row, databases, most_advanced, reachable, read_rows
from saga_registry.engine.relay import record_of
from saga_registry.engine.timer_keys import OLD_TABLE, has_old_timers
from saga_registry.registry.model import Registry
from saga_registry.registry.patterns import PayloadValidator
from saga_registry.registry.versions import upcast, version_in

Severity = Literal["breaking", "notice"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the new registry would break (or change) in what the services hold."""

    kind: str
    """`stranded`, `timer_dropped`, `timer_changed`, `timer_by_index`,
    `undecodable`, `unknown_skipped`."""
    severity: Severity
    saga_id: str
    services: tuple[str, ...]
    message: str


@dataclass(slots=True)
class Report:
    """What `check_databases` and `check_letters` found, and how much they read."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    @property
    def breaking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "breaking"]

    def doc(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "safe": not self.breaking,
            "counts": self.counts,
            "notes": self.notes,
            "findings": [{**asdict(f), "services": list(f.services)} for f in self.findings],
        }


class PayloadReader:
    """Reads events the way the new registry's consumers will, from the registry alone
    (the JSON Schema of each event: what its generated class accepts)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._validators: dict[str, Any] = {}

    def problem(self, record: Record) -> str | None:
        """Why a consumer on the registry could not read `record`, or None if it can."""
        try:
            env = Envelope.from_record(record)
        except BadEnvelope as exc:
            return str(exc)
        return self.envelope_problem(env)

    def envelope_problem(self, env: Envelope) -> str | None:
        """Why a consumer on the registry could not read `env`'s event, or None."""
        try:
            event = self.registry.event(env.type)
        except KeyError:
            return f"{env.type} is not an event of the registry"
        try:
            version = version_in(event, env.dataschema)
            payload = json.loads(env.data)
        except ValueError as exc:
            return str(exc).splitlines()[0]
        if not isinstance(payload, dict):
            return f"{env.type} payload is not a JSON object"
        if version < event.version:
            payload = upcast(event, payload, version)
        validator = self._validators.get(env.type)
        if validator is None:
            validator = self._validators[env.type] = PayloadValidator(event.payload_schema())
        for error in validator.iter_errors(payload):
            where = ".".join(str(p) for p in error.absolute_path) or "payload"
            return f"{env.type} v{version} payload: {where}: {error.message}"
        return None


async def check_databases(registry: Registry, template: str, report: Report) -> None:
    """Add to `report` what the services' databases (`template`, with `{service}`) hold
    that `registry` would strand or could not read."""
    reads = PayloadReader(registry)
    deadlines = {d.key: d for d in registry.state_machine.deadlines}
    events = {e.name for e in registry.events}
    copies: dict[str, list[tuple[str, Row]]] = {}
    async for service, conn in databases(registry, template, report.notes):
        for row in await read_rows(conn, tables.saga_state):
            copies.setdefault(row["saga_id"], []).append((service, row))
        for row in await read_rows(conn, tables.timers):
            report.count("timers")
            _timer(report, service, row, deadlines.get(row["deadline"]))
        if await has_old_timers(conn):
            _old_timers(report, service, await conn.execute(_OLD_TIMERS))
        for row in await read_rows(conn, tables.outbox, _UNSENT):
            report.count("unsent events")
            _record(report, reads, service, "unsent", row)
        for row in await read_rows(conn, tables.parked_held, _HELD):
            report.count("held events")
            _record(report, reads, service, "held behind a parked saga", row)
        unknown = tables.skipped.c.event_type.notin_(sorted(events))
        gone: dict[str, int] = {}
        for row in await read_rows(conn, tables.skipped, unknown):
            gone[row["event_type"]] = gone.get(row["event_type"], 0) + 1
        for event_type, n in sorted(gone.items()):
            why = (
                f"{n} skipped {event_type} event(s) of no event type the registry "
                "has any more: `saga trace` shows them unnamed"
            )
            report.findings.append(Finding("unknown_skipped", "notice", "", (service,), why))
    _sagas(report, registry, copies)


def _sagas(report: Report, registry: Registry, copies: dict[str, list[tuple[str, Row]]]) -> None:
    """The sagas the services hold: in flight unless the copy furthest along has ended
    (each service holds where the last event of its projection led); each copy in a
    state the registry no longer has is stranded, or only a notice once the saga ended."""
    states = {s.name for s in registry.state_machine.states}
    terminal = frozenset(registry.state_machine.terminal_states)
    reach = reachable(registry)
    in_flight = 0
    for saga_id, rows in copies.items():
        ended = most_advanced(rows, terminal, reach)[1]["state"] in terminal
        in_flight += not ended
        gone: dict[str, list[str]] = {}
        for service, row in rows:
            if row["state"] not in states:
                gone.setdefault(row["state"], []).append(service)
        for state, services in gone.items():
            why = f"in {state!r}: the registry has no state {state!r} any more"
            if ended:
                why += "; the saga ended, so only events of it still to be read there would stall"
            severity: Severity = "notice" if ended else "breaking"
            report.findings.append(Finding("stranded", severity, saga_id, tuple(services), why))
    report.count("sagas in flight", in_flight)


_UNSENT = tables.outbox.c.sent_at.is_(None)
_HELD = tables.parked_held.c.requeued.is_(False)
_OLD_TIMERS = text(f"SELECT saga_id, deadline, state, due_at FROM {OLD_TABLE}")


def _timer(report: Report, service: str, row: dict[str, Any], deadline: Any) -> None:
    saga, key, state = row["saga_id"], row["deadline"], row["state"]
    if deadline is None or deadline.state != state:
        gone = "is gone" if deadline is None else f"now guards {deadline.state!r}"
        report.findings.append(
            Finding(
                "timer_dropped",
                "breaking",
                saga,
                (service,),
                f"its deadline {key!r} in {state!r} {gone}: the timer is dropped unfired and "
                "the saga waits with no deadline",
            )
        )
    elif row["within_s"] is not None and row["within_s"] != deadline.within_s:
        report.findings.append(
            Finding(
                "timer_changed",
                "notice",
                saga,
                (service,),
                f"deadline {key!r} was armed for {row['within_s']:g} s, the registry now says "
                f"{deadline.within_s:g} s: this timer fires when it was armed to",
            )
        )


def _old_timers(report: Report, service: str, rows: Iterable[Any]) -> None:
    for saga_id, index, state, _ in rows:
        report.count("timers")
        report.findings.append(
            Finding(
                "timer_by_index",
                "notice",
                saga_id,
                (service,),
                f"a timer in {state!r} is still kept by the deadline's index ({index}) by an "
                "older version: start the services once on the registry it was armed under "
                "before reordering deadlines",
            )
        )


def _record(report: Report, reads: PayloadReader, service: str, what: str, row: Any) -> None:
    record = record_of(row)
    why = reads.problem(record)
    if why is not None:
        saga = row.get("saga_id") or record.key.decode("utf-8", "replace")
        report.findings.append(
            Finding("undecodable", "breaking", saga, (service,), f"an event {what}: {why}")
        )


def check_letters(registry: Registry, deliveries: Sequence[Delivery], report: Report) -> None:
    """Add to `report` the dead letters not replayed yet that consumers on `registry`
    could not read once replayed. A letter that is no CloudEvent at all is left out: no
    registry reads it."""
    reads = PayloadReader(registry)
    done = replays(deliveries)
    for d in deliveries:
        if is_marker(d) or (d.partition, d.offset) in done or d.unreadable is not None:
            continue
        try:
            env = Envelope.from_record(d.record)
        except BadEnvelope:
            continue
        report.count("dead letters")
        why = reads.envelope_problem(env)
        if why is not None:
            service = (d.record.header(SERVICE) or b"").decode("utf-8", "replace")
            report.findings.append(
                Finding(
                    "undecodable",
                    "breaking",
                    env.saga_id,
                    (service,) if service else (),
                    f"dead letter {d.partition}/{d.offset}, once replayed: {why}",
                )
            )
