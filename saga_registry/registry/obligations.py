"""What an event, applied and entering a state, makes owed: the one reading of the
engine's rules that the projections (`registry.projection`) and `saga check`
(`checker.model`) both model a saga with.

The rules, as the engine runs them:

- Each reaction to the event with `emits` owes one of them (`engine.answers`: a
  reaction must return one; a deferred one may answer now, later, or never).
- A deadline of the state is armed by the service producing its event, when that
  service moves the saga into the state (`engine.deadlines.DeadlineArming.arm`), unless
  its own reaction in that move already emitted an event leaving the state. Statically:
  no deadline is owed for a service whose (undeferred) reaction's every emit leaves it.
- A deferred answer and the deadlines of the same service in the state it waits in take
  one timer row, so only one of them is ever emitted (`engine.answers`): one `Slot`.
- The state's other deadlines are each producer's one `Slot` (one timer row a saga).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saga_registry.registry.model import Registry

SlotKind = Literal["initiate", "external", "react", "defer", "deadline"]
"""Why an emission is owed: a saga to begin, an initiating event the machine also takes
later, a reaction, a deferred reaction, or deadlines."""
How = Literal["initiated", "reacted", "answered", "deadline"]
"""How an event paying a slot is emitted."""


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One emission still owed: by `service`, for `cause` (the event reacted to, or the
    state whose deadline fires), paid by one event of `answers` or of `deadlines`."""

    kind: SlotKind
    service: str
    cause: str
    answers: tuple[str, ...]
    """What the reaction (or a deferred reaction's late answer, or the initiator) emits."""
    deadlines: tuple[str, ...] = ()
    """What the service's deadlines of `state` emit, when they share this slot."""
    state: str = ""
    """The state the deadline (or the deferred answer sharing its timer) waits in."""

    def ways(self) -> tuple[tuple[str, How], ...]:
        """Each (event, how it is emitted) that pays this slot."""
        first: How = _HOW[self.kind]
        own = () if self.kind == "deadline" else tuple((e, first) for e in self.answers)
        return own + tuple((e, "deadline") for e in self.deadlines)

    def guaranteed(self, state: str) -> bool:
        """Whether this emission must come while the saga is in `state`: a reaction's
        always does; a deferred answer need not (it may never come), nor a later
        initiating event (a customer may never cancel); a deadline does
        while the saga still is in the state it guards."""
        if self.kind in ("initiate", "react"):
            return True
        return bool(self.deadlines) and self.state == state


_HOW: dict[SlotKind, How] = {
    "initiate": "initiated",
    "external": "initiated",
    "react": "reacted",
    "defer": "answered",
    "deadline": "deadline",
}


class Obligations:
    """The registry's transitions, and `owed(event, state)` for it (computed once a pair)."""

    def __init__(self, registry: Registry) -> None:
        sm = registry.state_machine
        self.registry = registry
        self.delta: dict[tuple[str, str], str] = {
            (src, t.event): t.target for t in sm.transitions for src in t.sources
        }
        """(state, event) -> the state the event leads to, where it is allowed."""
        self._fired: dict[str, dict[str, tuple[str, ...]]] = {}
        """State -> producer -> the events of its deadlines there (first-seen order)."""
        for d in sm.deadlines:
            by_producer = self._fired.setdefault(d.state, {})
            producer = registry.event(d.emit).producer
            emits = by_producer.get(producer, ())
            if d.emit not in emits:
                by_producer[producer] = (*emits, d.emit)
        self._owed: dict[tuple[str, str], tuple[Slot, ...]] = {}

    def owed(self, event: str, state: str) -> tuple[Slot, ...]:
        """The emissions `event`, applied and entering `state`, makes owed (sorted; a
        service with two such reactions owes twice)."""
        key = (event, state)
        found = self._owed.get(key)
        if found is None:
            found = self._owed[key] = self._slots(event, state)
        return found

    def _slots(self, event: str, state: str) -> tuple[Slot, ...]:
        fired_by = dict(self._fired.get(state, {}))
        slots: list[Slot] = []
        for service in self.registry.services:
            for r in service.reactions:
                if r.event != event or not r.emits:
                    continue
                if r.defer:
                    # The answer and the service's deadlines take one timer row: one of
                    # them is emitted, never both (engine.answers._still_waits).
                    shared = fired_by.pop(service.name, ())
                    slots.append(Slot("defer", service.name, event, r.emits, shared, state))
                    continue
                if service.name in fired_by and all((state, x) in self.delta for x in r.emits):
                    # Whatever it emits leaves the state: no timer is armed
                    # (engine.deadlines.DeadlineArming.arm).
                    del fired_by[service.name]
                slots.append(Slot("react", service.name, event, r.emits))
        for producer, emits in fired_by.items():
            slots.append(Slot("deadline", producer, state, (), emits, state))
        return tuple(sorted(slots))
