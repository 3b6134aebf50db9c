"""A counterexample as people read it: numbered steps in log order (event, who emitted
it and how, state before -> after), what went wrong at the end; as JSON; and drawn over
the state machine in the style of `saga trace --dot` (`codegen.diagrams.saga_path`)."""

from __future__ import annotations

from typing import Any

from saga_registry.checker.model import Move
from saga_registry.checker.rules import Counterexample
from saga_registry.registry.model import Registry


def who(move: Move) -> str:
    """Who emitted the step's event, and why."""
    if move.how == "initiated":
        if move.slot.kind == "external":
            return f"{move.service}, initiating it outside any reaction"
        return f"{move.service} begins the saga"
    if move.how == "reacted":
        return f"{move.service}, reacting to {move.slot.cause}"
    if move.how == "answered":
        return f"{move.service}, answering {move.slot.cause} later (deferred)"
    return f"{move.service}, deadline of {move.slot.state} fired"


def where(move: Move) -> str:
    """The step's effect on the saga's state."""
    if move.target is None:
        return f"{move.source}: skipped, not allowed there"
    return f"{move.source} -> {move.target}"


def lines(example: Counterexample) -> list[str]:
    """The counterexample as text lines, the steps numbered from 1."""
    out = [f"counterexample to {example.rule} ({len(example.steps)} events):"]
    rows = [(f"{n}.", m.event, who(m), where(m)) for n, m in enumerate(example.steps, 1)]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for row in rows:
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
        out.append(f"  {cells}  {row[3]}")
    out.append(f"  => {example.end}")
    return [line.rstrip() for line in out]


def as_json(example: Counterexample) -> dict[str, Any]:
    """The counterexample as plain data."""
    return {
        "rule": example.rule,
        "state": example.state,
        "end": example.end,
        "steps": [
            {
                "n": n,
                "event": m.event,
                "service": m.service,
                "how": m.how,
                "cause": m.slot.cause,
                "source": m.source,
                "target": m.target,
                "skipped": m.target is None,
            }
            for n, m in enumerate(example.steps, 1)
        ],
    }


def dot(registry: Registry, example: Counterexample) -> str:
    """The Graphviz source of the counterexample: the state machine with the run's
    transitions numbered and coloured, the states it visited filled, the state it ends in
    bold, and one lane per service saying what each did with each event (skipped ones
    in red)."""
    # Imported here: only drawing needs Graphviz's library.
    from saga_registry.codegen.diagrams import saga_path

    visited = [registry.state_machine.initial]
    taken: list[tuple[str, str, str]] = []
    timeline: list[tuple[str, str, dict[str, str]]] = []
    for move in example.steps:
        consumers = registry.consumers(move.event)
        if move.target is None:
            actions = {c: f"skipped in {move.source}" for c in consumers}
        else:
            visited.append(move.target)
            taken.append((move.source, move.event, move.target))
            actions = {c: "reacted" for c in consumers}
        if move.how == "deadline":
            actions[move.service] = f"deadline of {move.slot.state}"
        elif move.how == "answered":
            actions[move.service] = f"late answer to {move.slot.cause}"
        timeline.append((move.event, move.service, actions))
    return saga_path(
        registry,
        f"breaking {example.rule}",
        example.state,
        visited,
        taken,
        timeline,
    )
