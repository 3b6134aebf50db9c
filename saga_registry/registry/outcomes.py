"""The outcome paths of a saga: every simple path of its state machine from the initial
state to a terminal one (the happy path and each failure with its compensations)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from saga_registry.registry.model import Registry, snake_case

MAX_OUTCOMES = 64
"""More paths than this are not drawn one by one (a generated registry can have millions)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One transition taken on an outcome path."""

    source: str
    event: str
    target: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """A way a saga can end: its steps and a stable, file-safe name."""

    name: str
    terminal: str
    steps: tuple[Step, ...]


def outcome_paths(registry: Registry) -> tuple[list[Outcome], bool]:
    """Every outcome path (at most `MAX_OUTCOMES`) and whether the list was cut short."""
    sm = registry.state_machine
    succ: dict[str, list[Step]] = defaultdict(list)
    for src, event, dst in sm.edges():
        succ[src].append(Step(src, event, dst))
    terminal = set(sm.terminal_states)
    failures = frozenset(e.name for e in registry.events if e.kind == "failure")
    found: list[tuple[Step, ...]] = []
    truncated = False

    def walk(state: str, path: list[Step], seen: set[str]) -> None:
        nonlocal truncated
        if truncated:
            return
        if state in terminal:
            if len(found) >= MAX_OUTCOMES:
                truncated = True
                return
            found.append(tuple(path))
            return
        for step in succ[state]:
            if step.target not in seen:
                seen.add(step.target)
                path.append(step)
                walk(step.target, path, seen)
                path.pop()
                seen.discard(step.target)

    walk(sm.initial, [], {sm.initial})
    return _name(found, failures), truncated


def _name(paths: list[tuple[Step, ...]], failures: frozenset[str]) -> list[Outcome]:
    def base(steps: tuple[Step, ...]) -> str:
        terminal = steps[-1].target if steps else "start"
        failure = next((s.event for s in steps if s.event in failures), None)
        return f"{terminal}_after_{snake_case(failure)}" if failure else terminal

    counts = Counter(base(p) for p in paths)
    seen: Counter[str] = Counter()
    out = []
    for steps in paths:
        name = base(steps)
        if counts[name] > 1:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        out.append(Outcome(name, steps[-1].target if steps else "", steps))
    return out
