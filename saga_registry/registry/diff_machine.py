"""How the saga state machine changed between two registries: states, transitions and
deadlines, judged for the sagas in flight (stored in a state, waiting on a timer)."""

from __future__ import annotations

from dataclasses import replace

from saga_registry.registry.diff_change import CONSUMERS_FIRST, Change
from saga_registry.registry.model import Deadline, StateMachine


def machine_changes(o: StateMachine, n: StateMachine) -> list[Change]:
    """Every change from the machine `o` to `n`: a state renamed (its edges and meaning
    kept under one new name) is one change; deadlines are matched by key."""
    old_states = {s.name: s for s in o.states}
    new_states = {s.name: s for s in n.states}
    renamed = _state_renames(o, n)
    changes: list[Change] = []
    for name in old_states:
        if name in renamed:
            changes.append(
                Change(
                    "state_renamed",
                    f"state {name}",
                    True,
                    "sagas in flight",
                    f"renamed to {renamed[name]}: sagas stored in {name} are in no state the "
                    "new machine knows and stall; keep the name",
                )
            )
        elif name not in new_states:
            changes.append(
                Change(
                    "state_removed",
                    f"state {name}",
                    True,
                    "sagas in flight",
                    f"sagas waiting in {name} are in no state the new machine knows and stall; "
                    "remove it once none is there",
                )
            )
    for name in new_states:
        if name not in old_states and name not in renamed.values():
            changes.append(
                Change("state_added", f"state {name}", False, "sagas in flight", "a new state")
            )
    for name, s in old_states.items():
        t = new_states.get(renamed.get(name, name))
        if t is None or (s.terminal, s.outcome) == (t.terminal, t.outcome):
            continue
        was = f"{s.outcome} end" if s.terminal else "not an end"
        now = f"{t.outcome} end" if t.terminal else "not an end"
        changes.append(
            Change(
                "terminal_changed",
                f"state {t.name}",
                True,
                "sagas in flight",
                f"it was {was}, now {now}: sagas that ended there, or wait there, are "
                "judged by the other meaning",
            )
        )
    if o.initial != n.initial and renamed.get(o.initial) != n.initial:
        changes.append(
            Change(
                "initial_changed",
                "state_machine.initial",
                False,
                "sagas in flight",
                f"new sagas start in {n.initial} (was {o.initial}); sagas under way are "
                "past it (their first transitions are compared apart)",
            )
        )
    changes += _transitions(o, n, renamed, set(old_states) - set(new_states) - set(renamed))
    moved = {d.key: replace(d, state=renamed.get(d.state, d.state)) for d in o.deadlines}
    changes += _deadlines(moved, n.deadlines)
    return changes


def _state_renames(o: StateMachine, n: StateMachine) -> dict[str, str]:
    """Old -> new name of each state gone whose edges and meaning a single new state has."""
    old_names = {s.name for s in o.states}
    new_names = {s.name for s in n.states}
    gone, came = old_names - new_names, new_names - old_names
    renames: dict[str, str] = {}
    for g in sorted(gone):
        s = o.state(g)
        edges = [e for e in o.edges() if g in (e[0], e[2])]
        same = [
            c
            for c in sorted(came)
            if (n.state(c).terminal, n.state(c).outcome) == (s.terminal, s.outcome)
            and (g == o.initial) == (c == n.initial)
            and {e for e in n.edges() if c in (e[0], e[2])}
            == {tuple(c if x == g else x for x in e) for e in edges}
        ]
        if len(same) == 1 and same[0] not in renames.values():
            renames[g] = same[0]
    return renames


def _transitions(
    o: StateMachine, n: StateMachine, renamed: dict[str, str], removed: set[str]
) -> list[Change]:
    before = {
        (renamed.get(s, s), e): renamed.get(t, t) for s, e, t in o.edges() if s not in removed
    }
    after = {(s, e): t for s, e, t in n.edges()}
    changes: list[Change] = []
    for (s, e), t in before.items():
        if (s, e) not in after:
            changes.append(
                Change(
                    "transition_removed",
                    f"{s} --{e}--> {t}",
                    True,
                    "sagas in flight",
                    f"sagas waiting in {s} for {e} now skip it and stall there",
                )
            )
        elif after[(s, e)] != t:
            changes.append(
                Change(
                    "transition_changed",
                    f"{s} --{e}--> {t}",
                    True,
                    "sagas in flight",
                    f"{e} now leads from {s} to {after[(s, e)]}: sagas under way take another "
                    "path than the one they started on, and services not yet deployed "
                    "disagree on their state",
                )
            )
    for (s, e), t in after.items():
        if (s, e) not in before and s in {x.name for x in o.states} | set(renamed.values()):
            changes.append(
                Change(
                    "transition_added",
                    f"{s} --{e}--> {t}",
                    False,
                    "sagas in flight",
                    f"old services skip {e} in {s}: deploy them before {e} is sent there",
                    CONSUMERS_FIRST,
                )
            )
    return changes


def _deadlines(old_by: dict[str, Deadline], news: tuple[Deadline, ...]) -> list[Change]:
    """Deadlines matched by key, as pending timers are: reordering them changes nothing.
    `old_by`: the old deadlines by their old keys, naming renamed states by their new
    names (the rename is its own change)."""
    new_by = {d.key: d for d in news}
    changes: list[Change] = []
    renamed: set[str] = set()
    for key, d in old_by.items():
        if key in new_by:
            changes += _deadline(key, d, new_by[key])
            continue
        same = [k for k, x in new_by.items() if k not in old_by and _same_timer(x, d)]
        code, why = "deadline_removed", "remove it once no saga waits there"
        if len(same) == 1 and same[0] not in renamed:
            renamed.add(same[0])
            code, why = (
                "deadline_renamed",
                f"its key became {same[0]}; give it `name: {key}` to keep its timers",
            )
        changes.append(
            Change(
                code,
                f"deadline {key}",
                True,
                "sagas in flight",
                f"timers armed under {key} are dropped unfired, so the sagas waiting for "
                f"it wait without it; {why}",
            )
        )
    for key, d in new_by.items():
        if key not in old_by and key not in renamed:
            changes.append(
                Change(
                    "deadline_added",
                    f"deadline {key}",
                    False,
                    "sagas in flight",
                    f"sagas already waiting in {d.state} get no timer for it; those "
                    "entering it after the deploy do",
                )
            )
    return changes


def _same_timer(a: Deadline, b: Deadline) -> bool:
    return (a.state, a.emit, a.within_s, a.payload) == (b.state, b.emit, b.within_s, b.payload)


def _deadline(key: str, o: Deadline, n: Deadline) -> list[Change]:
    where = f"deadline {key}"
    changes: list[Change] = []
    if o.state != n.state:
        why = (
            f"it now guards {n.state} (was {o.state}): timers armed in {o.state} are "
            "dropped unfired, so sagas waiting there wait without it"
        )
        changes.append(Change("deadline_changed", where, True, "sagas in flight", why))
    if o.emit != n.emit:
        why = (
            f"it now emits {n.emit} (was {o.emit}): sagas that started waiting for the old "
            "outcome get the new one"
        )
        changes.append(Change("deadline_changed", where, True, "sagas in flight", why))
    if o.within_s != n.within_s:
        why = (
            f"within_s {o.within_s:g} became {n.within_s:g}: armed timers keep the due time "
            "they were armed with; sagas entering after the deploy get the new one"
        )
        changes.append(Change("deadline_changed", where, False, "sagas in flight", why))
    if o.payload != n.payload:
        why = "its payload changed: timers still pending fire with the new payload"
        changes.append(Change("deadline_changed", where, False, "sagas in flight", why))
    return changes
