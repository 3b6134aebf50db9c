"""Every difference between two registries that matters to a running system, each judged
compatible or breaking and said for whom: what `saga diff` prints.

`diff_registries(old, new)` is pure: it reads two loaded registries and returns `Change`
values (diff_change.py), breaking ones first. Events and payloads are compared in
diff_payload.py and diff_fields.py, the state machine in diff_machine.py; the saga's
settings, topics and services here. Texts
(descriptions, stage texts, titles) are not compared: they change no contract.
docs/diff.md lists every code and its verdict.
"""

from __future__ import annotations

from saga_registry.registry.diff_change import (
    AUDIENCES,
    CONSUMERS_FIRST,
    Change,
    ordered,
    summary,
)
from saga_registry.registry.diff_machine import machine_changes
from saga_registry.registry.diff_payload import event_changes
from saga_registry.registry.model import Reaction, Registry, Service

__all__ = ["AUDIENCES", "Change", "diff_registries", "summary"]


def diff_registries(old: Registry, new: Registry) -> list[Change]:
    """Every change from `old` to `new`, breaking ones first, grouped by audience; an
    empty list when nothing that matters changed."""
    changes = _saga(old, new) + event_changes(old, new)
    changes += machine_changes(old.state_machine, new.state_machine)
    changes += _services(old, new)
    return ordered(changes)


def _saga(old: Registry, new: Registry) -> list[Change]:
    changes: list[Change] = []
    if old.name != new.name:
        changes.append(
            Change(
                "saga_renamed",
                "saga.name",
                True,
                "consumers",
                f"events in the log name the saga {old.name!r} in their source and "
                f"dataschema; keep the name",
            )
        )
    if old.key != new.key:
        changes.append(
            Change(
                "saga_key_changed",
                "saga.key",
                True,
                "sagas in flight",
                f"sagas in flight and the events in the log are keyed by `{old.key}`, not "
                f"`{new.key}`",
            )
        )
    for label, o, n in (
        ("events", old.events_topic, new.events_topic),
        ("dead_letter", old.dead_letter_topic, new.dead_letter_topic),
    ):
        if o.name != n.name:
            lost = (
                "events still in it are never read"
                if label == "events"
                else ("events parked in it are no longer listed or replayed by `saga dlq`")
            )
            changes.append(
                Change(
                    "topic_renamed",
                    f"topics.{label}",
                    True,
                    "services",
                    f"{o.name} became {n.name}: {lost}",
                )
            )
        if o.partitions != n.partitions:
            why = (
                "a saga's events go to the partition its key hashes to among them: its "
                "later events may land apart from its earlier ones and overtake them"
                if label == "events"
                else "an existing topic keeps its partitions (Kafka cannot lower them)"
            )
            changes.append(
                Change(
                    "partitions_changed",
                    f"topics.{label}",
                    True,
                    "services",
                    f"{o.partitions} partitions became {n.partitions}: {why}",
                )
            )
    if old.signed_events != new.signed_events:
        changes.append(
            Change(
                "signing_changed",
                "saga.signed_events",
                new.signed_events,
                "consumers",
                "events must now be signed: unsigned events in the log fail verification"
                if new.signed_events
                else "signatures are no longer checked",
            )
        )
    if old.projections != new.projections:
        changes.append(
            Change(
                "projections_changed",
                "saga.projections",
                False,
                "services",
                "each service now takes in only the events its reactions and saga state need"
                if new.projections
                else "each service now takes in every event of the topic",
            )
        )
    return changes


def _services(old: Registry, new: Registry) -> list[Change]:
    new_by = {s.name: s for s in new.services}
    old_by = {s.name: s for s in old.services}
    changes: list[Change] = []
    for s in old.services:
        if s.name not in new_by:
            answers = bool(s.initiates) or any(_answers(r) for r in s.reactions)
            why = (
                f"its reactions stop: sagas waiting for {s.name}'s answers stall"
                if answers
                else "it answered nothing: only its side effects stop"
            )
            changes.append(Change("service_removed", f"service {s.name}", answers, "services", why))
    for s in new.services:
        if s.name not in old_by:
            changes.append(
                Change("service_added", f"service {s.name}", False, "services", "a new service")
            )
        else:
            changes += _service(old_by[s.name], s, new)
    return changes


def _answers(r: Reaction) -> bool:
    return bool(r.emits) or r.defer


def _service(o: Service, n: Service, new: Registry) -> list[Change]:
    changes: list[Change] = []
    for e in o.initiates:
        if e not in n.initiates:
            why = f"{n.name} can no longer start sagas with {e}: callers doing so are refused"
            changes.append(Change("initiates_removed", f"service {n.name}", True, "services", why))
    for e in n.initiates:
        if e not in o.initiates:
            why = f"{n.name} may now start sagas with {e}"
            changes.append(Change("initiates_added", f"service {n.name}", False, "services", why))
    old_r = {r.event: r for r in o.reactions}
    new_r = {r.event: r for r in n.reactions}
    for event, r in old_r.items():
        where = f"{n.name} on {event}"
        if event not in new_r:
            why = (
                f"{n.name} no longer answers {event}: sagas waiting for its "
                f"{' or '.join(r.emits) or 'late answer'} stall"
                if _answers(r)
                else f"{n.name} stops taking in {event}; it answered nothing"
            )
            changes.append(Change("reaction_removed", where, _answers(r), "services", why))
            continue
        changes += _reaction(where, r, new_r[event], new)
    for event in new_r:
        if event not in old_r:
            why = f"{n.name} takes in {event} from the deploy on (not earlier events)"
            changes.append(Change("reaction_added", f"{n.name} on {event}", False, "services", why))
    return changes


def _reaction(where: str, o: Reaction, n: Reaction, new: Registry) -> list[Change]:
    changes: list[Change] = []
    for e in o.emits:
        if e not in n.emits:
            why = (
                f"a running reaction that returns {e} is refused as a forbidden emit, and "
                f"sagas under way no longer get {e} from it; update its code with the registry"
            )
            changes.append(Change("emit_removed", f"{where} emits {e}", True, "services", why))
    for e in n.emits:
        if e not in o.emits:
            readers = ", ".join(new.consumers(e)) or "no service"
            why = (
                f"the reaction may now emit {e}; deploy the services that read it "
                f"({readers}) first, old ones may not know it"
            )
            changes.append(
                Change("emit_added", f"{where} emits {e}", False, "services", why, CONSUMERS_FIRST)
            )
    if o.defer and not n.defer:
        why = "sagas whose reaction deferred wait for a late answer the reaction no longer gives"
        changes.append(Change("defer_removed", where, True, "sagas in flight", why))
    elif n.defer and not o.defer:
        why = "the reaction may now answer later; a deadline should guard the wait"
        changes.append(Change("defer_added", where, False, "sagas in flight", why))
    return changes
