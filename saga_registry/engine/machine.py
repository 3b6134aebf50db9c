"""The saga state machine, built from the registry with `transitions`.

The machine is plain data (states, triggers = event types); persistence stays outside it:
the runner loads a saga's state, asks the machine where an event leads, and saves the
result in the same transaction as everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from transitions import Machine

from saga_registry.registry.model import Deadline, Registry
from saga_registry.registry.projection import Projection, project


@dataclass(frozen=True, slots=True)
class Step:
    """Where an event leads a saga, or why it does not."""

    source: str
    target: str | None

    @property
    def allowed(self) -> bool:
        """Whether the event moves the saga (a transition exists from `source`)."""
        return self.target is not None


class SagaMachine:
    """The registry's state machine: one definition, applied to every saga's stored state."""

    def __init__(self, registry: Registry) -> None:
        sm = registry.state_machine
        self.initial = sm.initial
        self.terminal = frozenset(sm.terminal_states)
        self._machine = Machine(
            model=None,
            states=[s.name for s in sm.states],
            transitions=[
                {"trigger": t.event, "source": list(t.sources), "dest": t.target}
                for t in sm.transitions
            ],
            initial=sm.initial,
            auto_transitions=False,
        )
        self._deadlines: dict[str, list[Deadline]] = {}
        for d in sm.deadlines:
            self._deadlines.setdefault(d.state, []).append(d)

    def step(self, state: str, event_type: str) -> Step:
        """Apply `event_type` to a saga in `state` (the state is not changed here)."""
        found = self._machine.get_transitions(trigger=event_type, source=state)
        return Step(state, found[0].dest if found else None)

    def deadlines_in(self, state: str) -> list[Deadline]:
        """The deadlines armed while a saga is in `state`."""
        return self._deadlines.get(state, [])

    def replay(self, event_types: Iterable[str]) -> str:
        """The state a saga reaches from the initial one through `event_types` in log
        order, those not allowed where they arrive skipped: the saga's true state."""
        state = self.initial
        for event_type in event_types:
            state = self.step(state, event_type).target or state
        return state

    def is_terminal(self, state: str) -> bool:
        """Whether `state` ends the saga."""
        return state in self.terminal


class ServiceMachine(SagaMachine):
    """The state machine as one service follows it: its projection (`registry.projection`)
    of the registry's machine. `decide` judges the events the service takes in from the
    state it stored, exactly as the whole machine would judge them on the saga's true
    state; `step` stays the whole machine's."""

    def __init__(self, registry: Registry, service: str) -> None:
        super().__init__(registry)
        self.projection: Projection = project(registry, [service])[service]
        known = frozenset(e.name for e in registry.events)
        self.passes = frozenset(t.encode() for t in known - self.projection.events)
        """The `ce_type` header values of the events this service passes unread."""

    def takes(self, event_type: str | None) -> bool:
        """Whether the service takes in a record of `event_type` (None: a record with no
        readable type). A service that takes in no event of the registry does not read
        the topic at all; the others take any record whose type is not the registry's
        or cannot be read, to dead-letter it."""
        if not self.projection.events:
            return False
        return event_type is None or event_type.encode() not in self.passes

    def decide(self, state: str | None, event_type: str) -> Step:
        """Where `event_type` leads a saga this service stored in `state` (None: never
        seen), or why it does not. A stored state the projection does not know (written
        before it, or by an older registry) is judged by the whole machine."""
        source = state or self.initial
        target = self.projection.decisions.get((source, event_type), _UNKNOWN)
        if target is _UNKNOWN:
            return self.step(source, event_type)
        return Step(source, target if isinstance(target, str) else None)

    def applies(self, states: Iterable[str]) -> dict[str, frozenset[str]]:
        """Per state of `states`, the events this service takes in that `decide` still
        allows from it."""
        return {
            state: frozenset(e for e in self.projection.events if self.decide(state, e).allowed)
            for state in states
        }


_UNKNOWN = object()
