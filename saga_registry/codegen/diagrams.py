"""Graphviz sources of a registry's diagrams: the choreography, the state machine, and
one diagram per outcome path. Sources are deterministic (registry order, no timestamps);
the graphviz library quotes every label."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import graphviz

from saga_registry.registry.model import EVENT_KINDS, Registry
from saga_registry.registry.outcomes import Outcome

LARGE_GRAPH_EDGES = 300
"""Above this many edges, `dot`'s hierarchical layout of the choreography and the state
machine takes minutes (measured: over 120 s each at 1,000 edges); those diagrams then ask
Graphviz for the scalable force-directed `sfdp` (under 1 s)."""

KIND_COLOURS = {"domain": "#2e7d32", "failure": "#c62828", "compensation": "#ef6c00"}
_FONT = "Helvetica"


def _graph(name: str, comment: str, rankdir: str = "LR") -> graphviz.Digraph:
    g = graphviz.Digraph(name=name, comment=comment)
    g.attr(rankdir=rankdir, fontname=_FONT, labelloc="t", fontsize="16")
    g.attr("node", fontname=_FONT, fontsize="11")
    g.attr("edge", fontname=_FONT, fontsize="10")
    return g


def _source(g: graphviz.Digraph, edges: int) -> str:
    if edges > LARGE_GRAPH_EDGES:
        # Straight edges: sfdp's spline routing is as slow as dot on graphs this size.
        g.attr(layout="sfdp", overlap="prism")
    source: str = g.source
    return source


def _legend(g: graphviz.Digraph) -> None:
    with g.subgraph(name="cluster_legend") as legend:
        legend.attr(label="event kinds", fontsize="10", style="dashed", color="#999999")
        for kind in EVENT_KINDS:
            legend.node(f"legend_{kind}", kind, shape="plaintext", fontcolor=KIND_COLOURS[kind])


def choreography(
    registry: Registry, comment: str, counts: Mapping[tuple[str, str], int] | None = None
) -> str:
    """Services as nodes, every event as labelled edges from its producer to each consumer.
    With `counts` (by (event, consumer); consumer `""` for an event that ends the saga),
    each edge's label says how many went that way (a live view's)."""
    g = _graph("choreography", comment)
    g.attr(label=f"{registry.title}: choreography")
    for s in registry.services:
        g.node(
            s.name,
            s.name,
            shape="box",
            style="rounded,filled",
            fillcolor="#eef3fb",
            tooltip=s.description or s.name,
        )
    ends = False
    edges = 0
    for e in registry.events:
        colour = KIND_COLOURS[e.kind]
        label = f"{e.name}\n({e.kind})"
        consumers = registry.consumers(e.name)
        edges += max(len(consumers), 1)
        for consumer in consumers:
            g.edge(
                e.producer,
                consumer,
                label=_counted(label, counts, (e.name, consumer)),
                color=colour,
                fontcolor=colour,
                tooltip=e.stage_en,
            )
        if not consumers:
            ends = True
            g.edge(
                e.producer,
                "__end__",
                label=_counted(label, counts, (e.name, "")),
                color=colour,
                fontcolor=colour,
                tooltip=e.stage_en,
            )
    if ends:
        g.node("__end__", "end of saga", shape="doublecircle", fontsize="9")
    _legend(g)
    return _source(g, edges)


def _counted(label: str, counts: Mapping[Any, int] | None, key: Any) -> str:
    return label if counts is None else f"{label}\n{counts.get(key, 0):,}"


def state_machine(registry: Registry, comment: str, counts: Mapping[str, int] | None = None) -> str:
    """States, transitions labelled with their events, terminal states and deadlines. With
    `counts` (sagas by state), each state says how many sagas are in it."""
    sm = registry.state_machine
    kinds = {e.name: e.kind for e in registry.events}
    g = _graph("state_machine", comment)
    g.attr(label=f"{registry.title}: saga state machine (key: {registry.key})")
    g.node("__start__", "", shape="point", width="0.15")
    for s in sm.states:
        shape = "doublecircle" if s.terminal else "ellipse"
        fill = {"success": "#e8f5e9", "failure": "#ffebee"}.get(s.outcome or "", "white")
        g.node(
            s.name,
            _counted(s.name, counts, s.name),
            shape=shape,
            style="filled",
            fillcolor=fill,
            tooltip=s.description or s.name,
        )
    g.edge("__start__", sm.initial)
    for src, event, dst in sm.edges():
        colour = KIND_COLOURS[kinds[event]]
        g.edge(src, dst, label=event, color=colour, fontcolor=colour)
    for i, d in enumerate(sm.deadlines):
        timer = f"__deadline_{i}__"
        seconds = f"{d.within_s:g}"
        g.node(
            timer,
            f"after {seconds} s\nemit {d.emit}",
            shape="note",
            fontsize="9",
            color="#777777",
            tooltip=d.description or f"deadline on {d.state}",
        )
        g.edge(d.state, timer, style="dashed", color="#777777", arrowhead="none")
    _legend(g)
    return _source(g, len(sm.edges()) + len(sm.deadlines))


Lane = tuple[str, str, Mapping[str, str]]
"""One event of a saga's timeline: its type, its producer, and what each service that did
something with it did (`reacted (-> X)`, `skipped (not allowed in s)`, ...)."""


def saga_path(
    registry: Registry,
    saga_id: str,
    state: str,
    visited: Sequence[str],
    taken: Sequence[tuple[str, str, str]],
    timeline: Sequence[Lane] = (),
) -> str:
    """The state machine with one saga's path drawn over it (`saga trace --dot`, `saga
    ui`): the states it visited filled, `state` (where it is) drawn bold, the transitions it
    took numbered in order and coloured by their event's kind, the rest grey. The saga id
    may hold anything: it reaches DOT escaped by hand (backslashes, line breaks) and as
    `nohtml`, so that an id like `<b>` is not read as an HTML label; quotes are graphviz's
    to escape. With a `timeline`, the saga's events are drawn beside it too, one lane per
    service (`_lanes`)."""
    sm = registry.state_machine
    kinds = {e.name: e.kind for e in registry.events}
    steps: dict[tuple[str, str, str], list[int]] = {}
    for n, edge in enumerate(taken, 1):
        steps.setdefault(edge, []).append(n)
    g = _graph("saga_path", "one saga's path")  # not the id: a comment ends at a line break
    g.attr(label=_literal(f"saga {saga_id}: {state}"))
    fills = {"success": "#c8e6c9", "failure": "#ffcdd2"}
    for s in sm.states:
        look = (
            {"style": "filled", "fillcolor": fills.get(s.outcome or "", "#e3f2fd")}
            if s.name in visited
            else {"color": "#bbbbbb", "fontcolor": "#999999"}
        )
        g.node(
            s.name,
            s.name,
            shape="doublecircle" if s.terminal else "ellipse",
            penwidth="2.5" if s.name == state else "1",
            **look,
        )
    for src, event, dst in sm.edges():
        numbers = steps.get((src, event, dst))
        colour = KIND_COLOURS[kinds[event]] if numbers else "#cccccc"
        g.edge(
            src,
            dst,
            label=f"{','.join(map(str, numbers))}. {event}" if numbers else event,
            color=colour,
            fontcolor=colour if numbers else "#aaaaaa",
            penwidth="2.5" if numbers else "1",
        )
    _legend(g)
    if timeline:
        with g.subgraph(name="cluster_timeline") as lanes:
            lanes.attr(label="events in log order, one lane per service", color="#999999")
            lanes.node("timeline", _lanes(registry, timeline, kinds), shape="plaintext")
    return _source(g, len(sm.edges()))


def _lanes(registry: Registry, timeline: Sequence[Lane], kinds: Mapping[str, str]) -> str:
    """An HTML-like table: a column per event (numbered, in its kind's colour), a row per
    service; each cell what that service did with that event, the producer's marked.
    Every text is escaped: the details can hold anything an error message held."""

    def cell(text: str, colour: str = "#333333", fill: str = "") -> str:
        shown = html.escape(text).replace("\n", "<br/>") or " "
        back = f' bgcolor="{fill}"' if fill else ""
        return f'<td{back}><font color="{colour}" point-size="9">{shown}</font></td>'

    head = [cell("")] + [
        cell(f"{n}. {event}", KIND_COLOURS.get(kinds.get(event, ""), "#333333"))
        for n, (event, _, _) in enumerate(timeline, 1)
    ]
    rows = ["<tr>" + "".join(head) + "</tr>"]
    lanes = [s.name for s in registry.services]
    lanes += sorted({producer for _, producer, _ in timeline} - set(lanes))
    for lane in lanes:
        cells = [cell(lane, fill="#eef3fb")]
        for _, producer, actions in timeline:
            did = actions.get(lane, "")
            if producer == lane:
                did = "emitted" + (f"; {did}" if did else "")
            bad = did.startswith(("skipped", "dead-lettered", "held"))
            colour = KIND_COLOURS["failure"] if bad else "#333333"
            cells.append(cell(did, colour))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<<table border="0" cellborder="1" cellspacing="0">' + "".join(rows) + "</table>>"


def _literal(text: str) -> Any:
    escaped = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    return graphviz.nohtml(escaped)


def outcome(registry: Registry, path: Outcome, comment: str) -> str:
    """One outcome path: the states it passes and, on each step, the event, its producer
    and its consumers."""
    g = _graph(f"outcome_{path.name}", comment)
    title = path.name.replace("_", " ")
    g.attr(label=f"{registry.title}: outcome '{title}'")
    states = [registry.state_machine.initial, *(s.target for s in path.steps)]
    for i, name in enumerate(states):
        terminal = i == len(states) - 1
        g.node(f"s{i}", name, shape="doublecircle" if terminal else "ellipse")
    for i, step in enumerate(path.steps):
        event = registry.event(step.event)
        colour = KIND_COLOURS[event.kind]
        consumers = ", ".join(registry.consumers(event.name)) or "nobody"
        label = f"{i + 1}. {event.name} ({event.kind})\n{event.producer} -> {consumers}"
        g.edge(
            f"s{i}",
            f"s{i + 1}",
            label=label,
            color=colour,
            fontcolor=colour,
            tooltip=event.stage_en,
        )
    _legend(g)
    # A chain: dot lays out even a long one at once, so no `_source` size switch here.
    source: str = g.source
    return source
