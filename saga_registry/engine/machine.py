"""The saga state machine, built from the registry with `transitions`.

The machine is plain data (states, triggers = event types); persistence stays outside it:
the runner loads a saga's state, asks the machine where an event leads, and saves the
result in the same transaction as everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from transitions import Machine

from saga_registry.registry.model import Deadline, Registry


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
        self._deadlines: dict[str, list[tuple[int, Deadline]]] = {}
        for i, d in enumerate(sm.deadlines):
            self._deadlines.setdefault(d.state, []).append((i, d))

    def step(self, state: str, event_type: str) -> Step:
        """Apply `event_type` to a saga in `state` (the state is not changed here)."""
        found = self._machine.get_transitions(trigger=event_type, source=state)
        return Step(state, found[0].dest if found else None)

    def deadlines_in(self, state: str) -> list[tuple[int, Deadline]]:
        """The deadlines armed while a saga is in `state`, with their registry index."""
        return self._deadlines.get(state, [])

    def is_terminal(self, state: str) -> bool:
        """Whether `state` ends the saga."""
        return state in self.terminal
