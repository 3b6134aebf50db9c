"""The rules `saga check` proves over every explored run, each with a stable name (the
precise definitions: docs/check.md). A rule is `proved` when no run breaks it and the
search was exhaustive, `bounded` when no run up to the bound breaks it but some run was
cut there, `violated` with a shortest counterexample otherwise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from saga_registry.checker.explore import Exploration
from saga_registry.checker.model import Config, Move
from saga_registry.registry.obligations import Slot

Status = Literal["proved", "bounded", "violated"]


@dataclass(frozen=True, slots=True)
class Counterexample:
    """A run that breaks a rule: its events in log order, the state it ends in, and
    what went wrong there."""

    rule: str
    steps: tuple[Move, ...]
    state: str
    end: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's result."""

    rule: str
    status: Status
    detail: str
    counterexample: Counterexample | None = None


def _verdict(rule: str, found: Exploration, holds: str, broken: Counterexample | None) -> Verdict:
    if broken is not None:
        return Verdict(rule, "violated", broken.end, broken)
    if found.bound_hit:
        return Verdict(rule, "bounded", f"{holds} ({found.limit})")
    return Verdict(rule, "proved", holds)


def _waits(slot: Slot) -> str:
    return f"a deferred answer of {slot.service} to {slot.cause}"


def terminates(found: Exploration) -> Verdict:
    """Every run reaches a terminal state: no configuration where the saga waits in a
    non-terminal state with nothing bound to come (nothing owed, or only deferred answers
    that may never come and stale deadlines), and none from which no terminal state can
    be reached at all (a cycle without exit)."""
    world = found.world
    rule = "terminates"
    order = found.ordered()
    for config in order:
        if config.state in world.terminal:
            continue
        if any(s.guaranteed(config.state) for s in config.owed):
            continue
        deferred = [s for s in config.owed if s.kind == "defer" and s.state == config.state]
        why = (
            f"the saga waits in state {config.state} for {_waits(deferred[0])}, which may "
            "never come, and no deadline of that service guards the wait"
            if deferred
            else f"the saga is stuck in state {config.state}: nothing still owed moves it on"
        )
        return _verdict(rule, found, "", _example(rule, found, config, why))
    # Backwards from the terminal configurations (and the cut ones, whose future is unknown).
    preds: dict[Config, list[Config]] = {}
    for config, moves in found.moves.items():
        for _, nxt in moves:
            preds.setdefault(nxt, []).append(config)
    good = {c for c in order if c.state in world.terminal} | found.frontier
    todo = list(good)
    while todo:
        for before in preds.get(todo.pop(), ()):
            if before not in good:
                good.add(before)
                todo.append(before)
    for config in order:
        if config not in good:
            why = (
                f"from state {config.state} no run reaches a terminal state: "
                "the saga loops without exit"
            )
            return _verdict(rule, found, "", _example(rule, found, config, why))
    return _verdict(rule, found, "every run reaches a terminal state", None)


def compensated(found: Exploration) -> Verdict:
    """Every compensation declares what it `undoes`, and every run that ends in a terminal
    state of outcome `failure` has undone, after it, each event applied on it that some
    compensation declares in `undoes`."""
    world = found.world
    rule = "compensated"
    silent = [e.name for e in world.registry.events if e.kind == "compensation" and not e.undoes]
    if silent:
        # With nothing declared undone, no run has an effect to undo: the rule would hold
        # of every registry, and removing an `undoes` would go unnoticed.
        return Verdict(
            rule,
            "violated",
            f"{', '.join(silent)}: a compensation that names no event it undoes; declare "
            "`undoes: [...]` (what it undoes) so that its runs can be checked",
        )
    for config in found.ordered():
        if world.outcome.get(config.state) != "failure" or not config.effects:
            continue
        left = sorted(config.effects)
        undo = "; ".join(f"{e} (undone by {' or '.join(world.undone_by[e])})" for e in left)
        why = f"the saga ended in {config.state} (failure) with effects never undone: {undo}"
        return _verdict(rule, found, "", _example(rule, found, config, why))
    return _verdict(rule, found, "every failure undoes the effects before it", None)


def acts_only_when_allowed(found: Exploration) -> Verdict:
    """No reaction's event, nor a deferred reaction's late answer, lands where the saga
    does not allow it: its service acted (and committed its writes) for a saga that had
    moved on, and the event is skipped, so nobody reacts to it or undoes it. Deadline
    events are exempt: a deadline writes nothing but its event, and a skipped one is
    harmless."""
    rule = "acts_only_when_allowed"
    for config in found.ordered():
        for move, _ in found.moves.get(config, ()):
            if move.applied or move.how not in ("reacted", "answered"):
                continue
            what = (
                f"{move.service}'s reaction to {move.slot.cause}"
                if move.how == "reacted"
                else f"{move.service}'s late answer to {move.slot.cause}"
            )
            effect = (
                f"; the effect of {move.event} is never undone"
                if move.event in found.world.undone_by
                else ""
            )
            why = (
                f"{what} emitted {move.event} after the saga moved on to {config.state}, "
                f"where {move.event} is not allowed: it is skipped{effect}"
            )
            steps = (*found.path(config), move)
            return _verdict(rule, found, "", Counterexample(rule, steps, config.state, why))
    return _verdict(rule, found, "every emitted event lands where it is allowed", None)


def reachable(found: Exploration) -> Verdict:
    """Every state is entered, and every event applied, on some run (a never-applied
    event is dead registry text; an unentered state a path nobody takes)."""
    rule = "reachable"
    world = found.world
    states = {c.state for c in found.depth}
    applied = {m.event for moves in found.moves.values() for m, _ in moves if m.applied}
    missing = [
        *(f"state {s.name}" for s in world.registry.state_machine.states if s.name not in states),
        *(f"event {e.name}" for e in world.registry.events if e.name not in applied),
    ]
    if not missing:
        return _verdict(rule, found, "every state is entered and every event applied", None)
    what = f"never reached on any run: {', '.join(missing)}"
    if found.bound_hit:
        return Verdict(rule, "bounded", f"{what} ({found.limit})")
    return Verdict(rule, "violated", what)


def _example(rule: str, found: Exploration, config: Config, why: str) -> Counterexample:
    return Counterexample(rule, tuple(found.path(config)), config.state, why)


RULES: dict[str, Callable[[Exploration], Verdict]] = {
    "terminates": terminates,
    "compensated": compensated,
    "acts_only_when_allowed": acts_only_when_allowed,
    "reachable": reachable,
}
"""Every rule by its stable name, in the order they are reported."""


def dead_deadlines(found: Exploration) -> list[str]:
    """One line per deadline that fires on no explored run (a note, not a rule: the
    registry still works, but the deadline is dead text). The engine arms no timer when
    the deadline's own service answers the entering event at once with an event that
    leaves the state, so a deadline guarding a reaction that never defers never fires."""
    fired = {
        (m.slot.state, m.event)
        for moves in found.moves.values()
        for m, _ in moves
        if m.how == "deadline"
    }
    reg = found.world.registry
    entered = {c.state for c in found.depth}
    out = []
    for d in reg.state_machine.deadlines:
        if (d.state, d.emit) in fired:
            continue
        why = (
            f"{reg.event(d.emit).producer} answers every event entering {d.state} at once "
            "with one that leaves it, so no timer is ever armed"
            if d.state in entered
            else f"no run enters {d.state}"
        )
        out.append(f"deadline {d.key} ({d.emit} after {d.within_s:g} s) fires on no run: {why}")
    return out


def check_all(found: Exploration) -> list[Verdict]:
    """Every rule's verdict, in `RULES` order."""
    return [check(found) for check in RULES.values()]
