"""Each service's projection of the saga: the events it must take in, and what each does.

Every service used to apply every event of the topic to its own copy of each saga's
state. Most of that work decides nothing: Payment need not know that a reservation was
made to refuse a refund that is not due. A service's projection is the least set of
events it must see to decide, exactly as the whole state machine would, whether each
event it reacts to is allowed and where it leads; every other event of the registry is
passed on its type alone, without decoding it or touching the database.

Exactly as the whole machine, on every log the choreography can write. The model of those
logs: an event is on the log only because its producer put it there as the registry says
(initiating a saga, reacting to an event, answering a deferred reaction, or firing a
deadline), each reaction once; any of them may arrive late, after the saga moved on, and
is then not allowed. The model tracks a configuration per saga: the state, and the
emissions still owed, as `registry.obligations` reads them from the engine (a reaction's
one event among its `emits`, a deadline's event; a deferred answer and the deadlines of
the same wait share one, since they take one timer row). Who sends an event is checked
by `saga.signed_events`; without it, a service also sees the events that begin a saga,
so that an event of a saga that never began is refused everywhere, but an event forged
for a saga in flight can be taken by a service that does not see the events that would
refute it, where the whole machine would refuse it: a registry that must refuse forged
events turns signed events on.

A service stores, as its saga state, where the last event it applied led. From a stored
state, the configurations the saga may be in are those of the whole machine in that
state, moved on by any event the service does not see and by any it sees but would
refuse. The projection starts from the events the service reacts to, and those a
deadline it fires or a deferred reaction it waits on needs (entering and leaving that
state); while some stored state leaves a decision open (the event allowed in one
configuration, refused or led elsewhere in another), it adds the unseen event that
closes the most of them, then drops any added event that turned out not to be needed.
A registry too large to explore within a budget keeps every event visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from saga_registry.registry.model import Registry
from saga_registry.registry.obligations import Obligations, Slot

Due = tuple[str, frozenset[str]]
"""An emission still owed, as the projection tells them apart: who owes it (and for
which event, or which state's deadlines), and the events that would pay it (one of
them). Owed twice is owed once: a configuration holds a set."""
Config = tuple[str, frozenset[Due]]
"""A saga of the model: its state and the emissions still owed."""

MAX_CONFIGS = 20_000
"""Configurations explored before a registry counts as too large to project."""
MAX_WORK = 500_000
"""Moves tried (configuration by event), over all services, before it counts as such."""

_KIND_RANK = {"compensation": 0, "failure": 1, "domain": 2}
"""When two unseen events close as many decisions, see the one that happens less often."""


@dataclass(frozen=True)
class Projection:
    """One service's projection: the events it takes in and, per stored state and event,
    where the event leads (a state) or None (not allowed)."""

    service: str
    events: frozenset[str]
    """The event types the service takes in; it passes every other type unread."""
    reacts: frozenset[str]
    decisions: Mapping[tuple[str, str], str | None] = field(repr=False)
    """(stored state, event) -> target or None. Missing pairs (a state a service never
    stores, e.g. one a database written before projections holds) fall back to the whole
    machine."""
    whole: bool = False
    """True when the projection is every event (an observer, or a registry too large)."""

    @property
    def follows(self) -> frozenset[str]:
        """The events taken in only to follow the saga (no reaction)."""
        return self.events - self.reacts


class TooLarge(Exception):
    """Exploring the registry exceeded `MAX_CONFIGS` or `MAX_WORK`."""


class Model:
    """The choreography's logs as configurations (see the module's docstring)."""

    def __init__(self, registry: Registry) -> None:
        sm = registry.state_machine
        self.registry = registry
        self.initial = sm.initial
        self.obligations = Obligations(registry)
        self.delta = self.obligations.delta
        self.initiated = frozenset(e for s in registry.services for e in s.initiates)
        self.events = tuple(e.name for e in registry.events)
        self.kind = {e.name: e.kind for e in registry.events}
        self._owed: dict[tuple[str, str], frozenset[Due]] = {}
        self.work = 0
        self.configs = self._explore()
        self.in_state: dict[str, list[Config]] = {}
        for config in self.configs:
            self.in_state.setdefault(config[0], []).append(config)

    def owed(self, event: str, state: str) -> frozenset[Due]:
        """The emissions `event` entering `state` makes owed."""
        key = (event, state)
        found = self._owed.get(key)
        if found is None:
            found = frozenset(_due(slot) for slot in self.obligations.owed(event, state))
            self._owed[key] = found
        return found

    def offered(self, config: Config) -> frozenset[str]:
        """The events that can be put on the log in `config`: those that begin a saga,
        and those owed."""
        owed = config[1]
        return self.initiated.union(*(alts for _, alts in owed))

    def moves(self, config: Config, event: str) -> Iterator[tuple[Config, bool]]:
        """Each configuration `event` can lead `config` to, and whether it is allowed;
        raises `TooLarge` once `MAX_WORK` moves were tried."""
        self.work += 1
        if self.work > MAX_WORK:
            raise TooLarge
        state, owed = config
        target = self.delta.get((state, event))
        payers: list[frozenset[Due]] = []
        if event in self.initiated:
            payers.append(owed)
        payers.extend(owed - {slot} for slot in owed if event in slot[1])
        for rest in payers:
            if target is None:
                yield (state, rest), False
            else:
                yield (target, rest | self.owed(event, target)), True

    def _explore(self) -> frozenset[Config]:
        start: Config = (self.initial, frozenset())
        seen = {start}
        todo = [start]
        while todo:
            config = todo.pop()
            for event in self.offered(config):
                for nxt, _ in self.moves(config, event):
                    if nxt not in seen:
                        seen.add(nxt)
                        if len(seen) > MAX_CONFIGS:
                            raise TooLarge
                        todo.append(nxt)
        return frozenset(seen)


def _due(slot: Slot) -> Due:
    """`slot` as the projection tells emissions apart: which events can pay it is all
    that decides what comes next, so how each would be emitted is dropped."""
    if slot.kind == "deadline":
        return f"{slot.service}:deadline:{slot.state}", frozenset(slot.deadlines)
    return f"{slot.service}:{slot.cause}", frozenset(slot.answers + slot.deadlines)


class _View:
    """A service seeing `visible`: its stored states, their configurations, decisions."""

    def __init__(self, model: Model, visible: frozenset[str]) -> None:
        self.model = model
        self.visible = visible
        self.decisions: dict[tuple[str, str], str | None] = {}
        self.conflicts: list[tuple[str, str]] = []
        self.closures: dict[str, frozenset[Config]] = {}
        stored = {model.initial} | {t for (_, e), t in model.delta.items() if e in visible}
        for state in sorted(stored):
            self._decide(state)

    def _decide(self, state: str) -> None:
        model = self.model
        configs = self._closure(model.in_state.get(state, ()))
        self.closures[state] = configs
        outcomes: dict[str, set[str | None]] = {e: set() for e in self.visible}
        for c in configs:
            for event in model.offered(c) & self.visible:
                for nxt, allowed in model.moves(c, event):
                    outcomes[event].add(nxt[0] if allowed else None)
        for event in sorted(self.visible):
            found = outcomes[event]
            if len(found) > 1:
                self.conflicts.append((state, event))
            self.decisions[(state, event)] = found.pop() if len(found) == 1 else None

    def _closure(self, seeds: Iterable[Config]) -> frozenset[Config]:
        """`seeds` moved on by unseen events, and by seen ones that are refused."""
        model = self.model
        seen = set(seeds)
        todo = list(seen)
        while todo:
            config = todo.pop()
            for event in model.offered(config):
                quiet = event not in self.visible
                for nxt, allowed in model.moves(config, event):
                    if (quiet or not allowed) and nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
        return frozenset(seen)


def required(registry: Registry, service: str) -> frozenset[str]:
    """The events `service` must see whatever the decisions need: those it reacts to;
    those entering or leaving a state whose deadline it fires (to arm and drop the
    timer); the answers of its deferred reactions (to refuse a second one); and, unless
    the registry wants signed events, the events that begin a saga, so that an event of
    a saga that never began is refused by every service that takes anything in, as the
    whole machine refuses it."""
    reg = registry
    spec = reg.service(service)
    out = {r.event for r in spec.reactions}
    out |= {e for r in spec.reactions if r.defer for e in r.emits}
    mine = {d.state for d in reg.state_machine.deadlines if reg.event(d.emit).producer == service}
    for t in reg.state_machine.transitions:
        if t.target in mine or mine.intersection(t.sources):
            out.add(t.event)
    if out and not reg.signed_events:
        out |= {e for s in reg.services for e in s.initiates}
    return frozenset(out)


def project(registry: Registry, services: Iterable[str] | None = None) -> dict[str, Projection]:
    """The projection of each of `services` (default: all), by service name."""
    names = [s.name for s in registry.services] if services is None else list(services)
    if not registry.projections:
        return {name: _whole(registry, name) for name in names}
    try:
        model = Model(registry)
        return {name: _project(model, name) for name in names}
    except TooLarge:
        return {name: _whole(registry, name) for name in names}


def _orphans(registry: Registry, service: str) -> frozenset[str]:
    """The events `service` produces that no service must see: it takes them in itself,
    so that a malformed one is still dead-lettered by somebody."""
    seen = {e for s in registry.services for e in required(registry, s.name)}
    return frozenset(e.name for e in registry.events if e.producer == service) - seen


def _project(model: Model, service: str) -> Projection:
    reg = model.registry
    reacts = frozenset(r.event for r in reg.service(service).reactions)
    if reacts >= set(model.events):
        return _whole(reg, service)
    visible = set(required(reg, service) | _orphans(reg, service))
    added: list[str] = []
    view = _View(model, frozenset(visible))
    while view.conflicts:
        offered = {
            e for state, _ in view.conflicts for c in view.closures[state] for e in model.offered(c)
        }
        candidates = [e for e in model.events if e in offered and e not in visible]
        if not candidates:  # cannot happen: seeing every event decides every event
            break

        def score(event: str) -> tuple[int, int, int]:
            trial = _View(model, frozenset(visible | {event}))
            rank = _KIND_RANK.get(model.kind[event], 3)
            return (len(trial.conflicts), rank, model.events.index(event))

        best = min(candidates, key=score)
        visible.add(best)
        added.append(best)
        view = _View(model, frozenset(visible))
    for event in reversed(added):
        trial = _View(model, frozenset(visible - {event}))
        if not trial.conflicts:
            visible.discard(event)
            view = trial
    return Projection(service, frozenset(visible), reacts, view.decisions)


def _whole(registry: Registry, service: str) -> Projection:
    reacts = frozenset(r.event for r in registry.service(service).reactions)
    events = frozenset(e.name for e in registry.events)
    return Projection(service, events, reacts, {}, whole=True)


def counterexample(registry: Registry, projections: Mapping[str, Projection]) -> list[str] | None:
    """A log of the model on which some service's projection decides an event it takes
    in otherwise than the whole machine (the log's event types, the last one decided
    wrongly), or None if there is none: every log is explored, with each service's
    stored state beside the saga's configuration."""
    model = Model(registry)
    names = sorted(projections)
    start = (model.initial, frozenset[Due](), tuple(model.initial for _ in names))
    paths: dict[tuple[str, frozenset[Due], tuple[str, ...]], list[str]] = {start: []}
    todo = [start]
    while todo:
        node = todo.pop()
        state, owed, stored = node
        for event in sorted(model.offered((state, owed))):
            for (nxt, rest), allowed in model.moves((state, owed), event):
                truth = nxt if allowed else None
                after = list(stored)
                for i, name in enumerate(names):
                    p = projections[name]
                    if event not in p.events:
                        continue
                    decided = p.decisions.get((stored[i], event), _step(model, stored[i], event))
                    if decided != truth:
                        return [*paths[node], event]
                    if decided is not None:
                        after[i] = decided
                key = (nxt, rest, tuple(after))
                if key not in paths:
                    paths[key] = [*paths[node], event]
                    todo.append(key)
    return None


def _step(model: Model, state: str, event: str) -> str | None:
    return model.delta.get((state, event))
