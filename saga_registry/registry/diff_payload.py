"""The differences between two registries' events: the events themselves and their payloads.

A payload change is judged in the direction that cannot be helped by a deploy order:
the new consumers must read every old event still in the log (backward compatibility).
Old events are first read through the new registry's upcasts, as the engine reads them,
so a rename, a new required field or a removed enum value an upcast covers is
compatible once the event's version was raised. The other direction, old consumers
reading the new producer's events during a rolling deploy, is fixed by deploying the
consumers first: such changes are compatible with `rollout = "consumers first"`
(generated event classes refuse unknown fields and values, so even an optional field
is one of them).
"""

from __future__ import annotations

from saga_registry.registry.diff_change import CONSUMERS_FIRST, Change
from saga_registry.registry.diff_fields import PayloadDiff, upcast_step
from saga_registry.registry.model import Event, Registry, Upcast


def event_changes(old: Registry, new: Registry) -> list[Change]:
    """Every difference between the events of `old` and `new`, in `new`'s order (removed
    events first)."""
    changes: list[Change] = []
    new_names = {e.name for e in new.events}
    for e in old.events:
        if e.name not in new_names:
            changes.append(_removed(e, old))
    old_names = {e.name for e in old.events}
    for e in new.events:
        if e.name not in old_names:
            changes.append(_added(e))
        else:
            changes += _event(old.event(e.name), e, new)
    return changes


def _removed(e: Event, old: Registry) -> Change:
    readers = ", ".join(old.consumers(e.name)) or "no service"
    return Change(
        "event_removed",
        e.name,
        True,
        "consumers",
        f"{e.name} events still in the log or sent by an old {e.producer} are unknown to "
        f"the new services (it was read by {readers}); remove it only once none can arrive",
    )


def _added(e: Event) -> Change:
    return Change(
        "event_added",
        e.name,
        False,
        "consumers",
        f"a new event: old services do not know the type, so deploy them before "
        f"{e.producer} starts producing it",
        CONSUMERS_FIRST,
    )


def _event(o: Event, n: Event, new: Registry) -> list[Change]:
    changes: list[Change] = []
    if o.producer != n.producer:
        changes.append(
            Change(
                "producer_changed",
                n.name,
                True,
                "producers",
                f"{n.producer} now produces {n.name} instead of {o.producer}: while both "
                "are deployed, both or neither may emit it, and signed events in the log "
                f"carry {o.producer}'s signature",
            )
        )
    if o.kind != n.kind:
        changes.append(
            Change(
                "kind_changed",
                n.name,
                False,
                "services",
                f"{n.name} is now a {n.kind} event (was {o.kind}): the engine treats every "
                "kind alike; diagrams and `saga check` read it differently",
            )
        )
    if n.version < o.version:
        changes.append(
            Change(
                "version_lowered",
                n.name,
                True,
                "consumers",
                f"{n.name}'s version went down from {o.version} to {n.version}: version "
                f"{o.version} events in the log are newer than the registry knows",
            )
        )
    elif n.version > o.version:
        changes.append(
            Change(
                "version_raised",
                n.name,
                False,
                "consumers",
                f"{n.name} is now version {n.version}: new consumers read version "
                f"{o.version} events through the upcasts; old consumers do not know "
                f"version {n.version}, so deploy "
                f"{', '.join(new.consumers(n.name)) or 'its consumers'} before {n.producer}",
                CONSUMERS_FIRST,
            )
        )
    changes += _older_upcasts(o, n)
    ctx = PayloadDiff(o, n, ", ".join(new.consumers(n.name)) or "no service")
    changes += ctx.fields(n.name, o.fields, n.fields, top=True)
    return changes


def _reads(step: Upcast | None) -> object:
    """What `step` does, whatever order the registry lists its entries in."""
    if step is None:
        return None
    values = {f: dict(pairs) for f, pairs in step.values}
    return dict(step.rename), values, dict(step.defaults)


def _older_upcasts(o: Event, n: Event) -> list[Change]:
    """Upcasts of versions older than `o`'s that `n` reads differently: events of those
    versions may still be in the log."""
    changes: list[Change] = []
    for step in o.upcasts:
        now = upcast_step(n, step.from_version)
        if step.from_version < min(o.version, n.version) and _reads(step) != _reads(now):
            changes.append(
                Change(
                    "upcast_changed",
                    f"{n.name} upcast from {step.from_version}",
                    True,
                    "consumers",
                    f"version {step.from_version} events still in the log now read "
                    f"differently; leave {n.name}'s upcast from {step.from_version} as it was",
                )
            )
    return changes
