"""The abstract world `saga check` explores: one saga of a registry, as the engine runs it.

What the engine guarantees, and this model therefore assumes (read from the engine):

- All events of a saga are on one partition, so every service applies them in one log
  order, and each service decides an event from the state it stored exactly as the whole
  state machine decides it on the log's prefix (`registry.projection`). One state thus
  stands for every service's view: the saga's state after the log so far.
- An event allowed where it lands moves the saga, and each service reacting to it runs
  its reaction once (inbox row and reaction writes in one transaction). An event not
  allowed is recorded as skipped, and no reaction to it runs.
- What an applied event makes owed (each reaction's emission, the deadlines armed, a
  deferred answer sharing one timer row with its service's deadlines) is
  `registry.obligations`, the reading of the engine the projections share.
- What a service emits is appended to the log at any later moment: it may land after
  events that moved the saga on (late), where it is skipped.
- A redelivered event (same id) is dropped by the inbox, so a duplicate changes nothing.

A configuration is the saga's state, the emissions still owed (each a `Slot`), the
effects committed and not yet undone, and whether the saga began.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_registry.registry.model import Registry
from saga_registry.registry.obligations import How, Obligations, Slot


@dataclass(frozen=True, slots=True, order=True)
class Config:
    """A saga of the model: see the module docstring."""

    state: str
    owed: tuple[Slot, ...]
    """A sorted multiset: a reaction that ran twice owes twice."""
    effects: frozenset[str]
    """Events applied that some compensation `undoes`, not undone since."""


@dataclass(frozen=True, slots=True)
class Move:
    """One event appended to the log, and what it did."""

    event: str
    service: str
    how: How
    slot: Slot
    source: str
    target: str | None
    """None: not allowed in `source`, skipped."""

    @property
    def applied(self) -> bool:
        """Whether the event moved the saga (rather than being skipped)."""
        return self.target is not None


class World:
    """The registry's transition relation over configurations."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        sm = registry.state_machine
        self.initial_state = sm.initial
        self.obligations = Obligations(registry)
        self.delta = self.obligations.delta
        self.owed = self.obligations.owed
        """What an event, applied and entering a state, makes owed."""
        self.terminal = frozenset(sm.terminal_states)
        self.outcome = {s.name: s.outcome for s in sm.states}
        self.undone_by: dict[str, tuple[str, ...]] = {}
        """Effect event -> the compensations that undo it."""
        for e in registry.events:
            for u in e.undoes:
                self.undone_by.setdefault(u, ())
                self.undone_by[u] += (e.name,)
        self.later = tuple(
            Slot("external", s.name, "", (e,))
            for s in registry.services
            for e in s.initiates
            if any(src != sm.initial for src, ev in self.delta if ev == e)
        )
        """Initiating events the machine also allows after the saga began (a customer's
        cancellation, say): each may be emitted once, at any moment."""

    def initial(self) -> Config:
        """The saga before its first event: owed one initiating event."""
        starts: list[Slot] = []
        for s in self.registry.services:
            if s.initiates:
                starts.append(Slot("initiate", s.name, "", tuple(s.initiates)))
        return Config(self.initial_state, tuple(sorted(starts)), frozenset())

    def moves(self, config: Config) -> list[tuple[Move, Config]]:
        """Every event that can be appended next, and where it leads."""
        out: list[tuple[Move, Config]] = []
        seen: set[Slot] = set()
        for i, slot in enumerate(config.owed):
            if slot in seen:
                continue  # a second copy of an owed slot moves alike
            seen.add(slot)
            rest = config.owed[:i] + config.owed[i + 1 :]
            if slot.kind == "initiate":
                # A saga begins once: paying one initiator's slot drops the others'; an
                # initiating event the machine also takes later may come once, any time.
                rest = tuple(s for s in rest if s.kind != "initiate") + self.later
            for event, how in slot.ways():
                out.append(self._append(config, rest, slot, event, how))
        return out

    def _append(
        self, config: Config, rest: tuple[Slot, ...], slot: Slot, event: str, how: How
    ) -> tuple[Move, Config]:
        source = config.state
        target = self.delta.get((source, event))
        move = Move(event, slot.service, how, slot, source, target)
        if target is None:
            return move, Config(source, rest, config.effects)
        effects = set(config.effects) - set(self.registry.event(event).undoes)
        if event in self.undone_by:
            effects.add(event)
        # A service keeps one timer per saga: a deadline owed again is still one.
        new = tuple(s for s in self.owed(event, target) if s.kind != "deadline" or s not in rest)
        owed = tuple(sorted(rest + new))
        return move, Config(target, owed, frozenset(effects))
