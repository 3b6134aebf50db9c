"""A saga's trace: its records in log order, what each service did with each, and the
path it took on the registry's state machine (`saga trace`). Built from what
`saga_registry.engine.inspect` reads. The path is drawn by `codegen.diagrams.saga_path`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saga_registry.engine.bus import Delivery
from saga_registry.engine.deadletter import DeadLetter
from saga_registry.engine.inspect import ServiceRecords, outbox_headers
from saga_registry.engine.machine import SagaMachine
from saga_registry.registry.model import Registry
from saga_registry.registry.projection import project


@dataclass(frozen=True, slots=True)
class Action:
    """What one service did with one record: `reacted`, `applied`, `skipped`,
    `dead-lettered`, `held` (its saga is parked there), `passed` (an event outside its
    projection, passed unread, or, with detail `replay for S`, a copy `saga dlq replay`
    put back for another service) or `-` (not seen)."""

    what: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.what} ({self.detail})" if self.detail else self.what


@dataclass(slots=True)
class TraceRow:
    """One record of the saga in the log, and what became of it."""

    partition: int | None
    offset: int | None
    event_id: str
    event_type: str
    producer: str
    before: str
    after: str
    note: str
    """Why the state did not move (`duplicate`, `not allowed`, `not applied`), or ''; a
    copy `saga dlq replay` put back says so first (`replay for S`)."""
    at: float | None
    actions: dict[str, Action]


@dataclass(frozen=True, slots=True)
class Pending:
    """An event a service emitted for the saga that no service has taken in yet."""

    service: str
    event_id: str
    event_type: str
    created_at: float
    sent: bool


@dataclass(slots=True)
class Trace:
    """A saga's events in log order, the states it went through, what is still pending."""

    saga_id: str
    rows: list[TraceRow]
    pending: list[Pending]
    visited: list[str]
    taken: list[tuple[str, str, str]]
    """Transitions taken, as (source, event, target), in order."""

    @property
    def state(self) -> str:
        """The state the log leads to."""
        return self.visited[-1]


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead-letter record of the saga: who gave up on which record of the log, and why."""

    service: str
    partition: int | None
    offset: int | None
    event_id: str
    event_type: str
    source: str
    error: str


def letters_of(deliveries: Sequence[Delivery], saga_id: str, topic: str) -> list[Letter]:
    """The dead-letter records of `saga_id` (keyed by it), placed where their original sat
    in `topic` (the `saga_origin` header: topic/partition/offset)."""
    found = []
    for delivery in deliveries:
        d = DeadLetter.of(delivery)
        if d.saga_id != saga_id:
            continue
        where, _, offset = d.origin.rpartition("/")
        origin_topic, _, partition = where.rpartition("/")
        on_log = origin_topic == topic and partition.isdigit() and offset.isdigit()
        found.append(
            Letter(
                service=d.service,
                partition=int(partition) if on_log else None,
                offset=int(offset) if on_log else None,
                event_id=d.event_id,
                event_type=d.event_type or "?",
                source=d.source,
                error=f"{d.error_type}: {d.error}" if d.error_type else d.error,
            )
        )
    return found


def producer_of(source: str) -> str:
    """Who produced an event, from its CloudEvents source: `saga/<registry>/<Service>`
    is that service, `.../deadline` its deadline timer; anything else is an outside
    producer, shown as its source."""
    parts = source.split("/")
    if len(parts) in (3, 4) and parts[0] == "saga" and parts[2]:
        if len(parts) == 4:
            return f"{parts[2]} (deadline)" if parts[3] == "deadline" else source
        return parts[2]
    return source


_Key = tuple[Any, ...]


def _key(partition: int | None, offset: int | None, event_id: str) -> _Key:
    # Rows written before log positions were kept have none: they are keyed by event id.
    return ("log", partition or 0, offset) if offset is not None else ("id", event_id)


PASSED = Action("passed")
"""What a service does with an event outside its projection: passes it unread."""


def build_trace(
    registry: Registry,
    saga_id: str,
    records: dict[str, ServiceRecords],
    letters: Sequence[Letter] = (),
) -> Trace:
    """The saga's records in log order (by partition offset, never by time: a batch shares
    one timestamp), each with its producer, the state before and after (the registry's
    machine stepped through the log: an event id seen before, or an event the state does
    not allow, leaves it) and each service's action. A replayed copy (`_replayed_for`) is
    no duplicate: it moves the state if no service had applied its event before."""
    machine = SagaMachine(registry)
    projections = project(registry)
    info: dict[_Key, dict[str, Any]] = {}
    acts: dict[_Key, dict[str, Action]] = {}
    sources: dict[str, str] = {}
    emitted_by: dict[str, str] = {}
    caused: dict[tuple[str, str], list[str]] = {}
    in_inbox: set[_Key] = set()
    taken_at: dict[tuple[str, str], list[_Key]] = {}

    def note(key: _Key, event_id: str, event_type: str, at: float | None) -> None:
        got = info.setdefault(key, {"event_id": event_id, "event_type": event_type, "at": at})
        if at is not None and (got["at"] is None or at < got["at"]):
            got["at"] = at

    for service, recs in records.items():
        for row in recs.outbox:
            headers = outbox_headers(row)
            emitted_by[row["event_id"]] = service
            cause = headers.get("ce_causationid")
            if cause:
                # A deadline's event names as its cause the event that entered the state
                # it guarded: the timer emitted it, not that event's reaction.
                by_timer = headers.get("ce_source", "").endswith("/deadline")
                kind = headers.get("ce_type", "?")
                caused.setdefault((service, cause), []).append(
                    f"deadline fired: {kind}" if by_timer else kind
                )
    for service, recs in records.items():
        reacts = {r.event for r in registry.service(service).reactions}
        deferring = {r.event for r in registry.service(service).reactions if r.defer}
        for row in recs.inbox:
            key = _key(row["log_partition"], row["log_offset"], row["event_id"])
            note(key, row["event_id"], row["event_type"], row["received_at"])
            sources.setdefault(row["event_id"], row["source"])
            in_inbox.add(key)
            taken_at.setdefault((service, row["event_id"]), []).append(key)
            if row["event_type"] in reacts:
                emits = caused.get((service, row["event_id"]), [])
                answered = [e for e in emits if not e.startswith("deadline fired")]
                parts = ["-> " + ", ".join(answered)] if answered else []
                if row["event_type"] in deferring and not answered:
                    parts.append("deferred")
                parts += [e for e in emits if e not in answered]
                action = Action("reacted", "; ".join(parts))
            else:
                action = Action("applied")
            acts.setdefault(key, {})[service] = action
        for row in recs.skipped:
            key = _key(row["log_partition"], row["log_offset"], row["event_id"])
            note(key, row["event_id"], row["event_type"], row["at"])
            why = row["reason"] + (f" in {row['state']}" if row["state"] else "")
            # A record not allowed in the state has an inbox row too: the skip says more.
            acts.setdefault(key, {})[service] = Action("skipped", why)
    for letter in letters:
        key = _key(letter.partition, letter.offset, letter.event_id)
        note(key, letter.event_id, letter.event_type, None)
        sources.setdefault(letter.event_id, letter.source)
        acts.setdefault(key, {}).setdefault(letter.service, Action("dead-lettered", letter.error))

    # An event a service dead-lettered may be in no inbox at all: with projections, it
    # may be the only service that takes that event in. Its producer's outbox knows it.
    known = {got["event_id"] for got in info.values()}
    for recs in records.values():
        head = recs.parked["event_id"] if recs.parked is not None else None
        if head is None or head in known:
            continue
        for producer in records.values():
            sent = [r for r in producer.outbox if r["event_id"] == head]
            if sent:
                kind = outbox_headers(sent[0]).get("ce_type", "?")
                note(_key(None, None, head), head, kind, sent[0]["created_at"])
                known.add(head)
                break
    logged = sorted((k for k in info if k[0] == "log"), key=lambda k: (k[1], k[2]))
    unlogged = sorted((k for k in info if k[0] == "id"), key=lambda k: info[k]["at"] or 0.0)
    order = logged + unlogged
    position = {k: i for i, k in enumerate(order)}
    parked_at: dict[str, _Key] = {}
    for service, recs in records.items():
        if recs.parked is None:
            continue
        first = next((k for k in order if info[k]["event_id"] == recs.parked["event_id"]), None)
        if first is not None:
            parked_at[service] = first
            acts.setdefault(first, {}).setdefault(
                service, Action("dead-lettered", str(recs.parked["error"]))
            )

    state = machine.initial
    visited, taken, rows = [state], [], []
    seen: set[str] = set()
    stepped: set[str] = set()
    dead_for: dict[str, set[str]] = {}
    for index, key in enumerate(order):
        event_id, event_type = info[key]["event_id"], info[key]["event_type"]
        before, why = state, ""
        meant_for = _replayed_for(
            acts.get(key, {}),
            dead_for.get(event_id, set()),
            [position[k] for s in acts.get(key, {}) for k in taken_at.get((s, event_id), [])],
            index,
        )
        if event_id in seen and not meant_for:
            why = "duplicate"
        elif key not in in_inbox:
            why = "not applied"
        elif event_id not in stepped:
            # A replayed copy of an event no service applied before moves the saga here;
            # one of an event the machine has taken only lets its service catch up.
            stepped.add(event_id)
            step = machine.step(state, event_type)
            if step.target is None:
                why = "not allowed"
            else:
                state = step.target
                visited.append(state)
                taken.append((before, event_type, state))
        if meant_for:
            why = "; ".join([f"replay for {', '.join(meant_for)}", *([why] if why else [])])
        seen.add(event_id)
        actions: dict[str, Action] = {}
        for service in (s.name for s in registry.services):
            got = acts.get(key, {}).get(service)
            needed = event_type in projections[service].events
            if got is None and meant_for and needed:
                # `saga dlq replay` marks a copy for one service; the others pass it.
                got = Action("passed", f"replay for {', '.join(meant_for)}")
            if got is None and service in parked_at and position[parked_at[service]] < index:
                got = Action("held", "saga parked here")
            if got is None and not needed:
                got = PASSED
            actions[service] = got or Action("-")
            if got is not None and got.what == "dead-lettered":
                dead_for.setdefault(event_id, set()).add(service)
        source = sources.get(event_id)
        rows.append(
            TraceRow(
                partition=key[1] if key[0] == "log" else None,
                offset=key[2] if key[0] == "log" else None,
                event_id=event_id,
                event_type=event_type,
                producer=producer_of(source) if source else emitted_by.get(event_id, "?"),
                before=before,
                after=state,
                note=why,
                at=info[key]["at"],
                actions=actions,
            )
        )
    pending = sorted(
        (
            Pending(
                service,
                row["event_id"],
                outbox_headers(row).get("ce_type", "?"),
                row["created_at"],
                row["sent_at"] is not None,
            )
            for service, recs in records.items()
            for row in recs.outbox
            if row["event_id"] not in seen
        ),
        key=lambda p: p.created_at,
    )
    return Trace(saga_id, rows, pending, visited, taken)


def _replayed_for(
    here: dict[str, Action], dead: set[str], earlier_takes: list[int], index: int
) -> list[str]:
    """The services a replayed copy was meant for, if the record at `index` is one: every
    service that did something with it had dead-lettered an earlier record of the same event
    and had not taken that event in before (a copy published twice is taken in by every
    service the first time). `here` is what each service did with the record, `dead` who
    dead-lettered the event earlier, `earlier_takes` the log positions at which the
    services of `here` took the event in."""
    if not here or not dead or any(p < index for p in earlier_takes):
        return []
    if not set(here) <= dead:
        return []
    return sorted(here)


def trace_doc(reg: Registry, t: Trace) -> dict[str, Any]:
    """`t` as JSON-ready data (`saga trace --json`, `saga ui`)."""
    services = [s.name for s in reg.services]
    return {
        "saga_id": t.saga_id,
        "state": t.state,
        "outcome": reg.state_machine.state(t.state).outcome,
        "events": [
            {
                "partition": r.partition,
                "offset": r.offset,
                "event_id": r.event_id,
                "event_type": r.event_type,
                "producer": r.producer,
                "before": r.before,
                "after": r.after,
                "note": r.note,
                "at": r.at,
                "actions": {
                    s: {"action": r.actions[s].what, "detail": r.actions[s].detail}
                    for s in services
                },
            }
            for r in t.rows
        ],
        "pending": [
            {
                "service": p.service,
                "event_id": p.event_id,
                "event_type": p.event_type,
                "created_at": p.created_at,
                "sent": p.sent,
            }
            for p in t.pending
        ],
        "path": t.visited,
    }
