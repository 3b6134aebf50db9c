"""The registry's diagrams with live counts, drawn by Graphviz's `dot` (the same sources
as `saga codegen`'s pictures, `saga_registry.codegen.diagrams`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from saga_registry.codegen import diagrams
from saga_registry.engine.trace import Trace
from saga_registry.registry.model import Registry

_DOT_TIMEOUT_S = 30.0


class DrawingFailed(Exception):
    """`dot` is missing, failed or took too long; the message says which."""


def choreography(registry: Registry, overview: Mapping[str, Any]) -> str:
    """The choreography's DOT, each edge with how many of its event its consumer took in
    (an event that ends the saga: the most any service took in)."""
    counts: dict[tuple[str, str], int] = {}
    for row in overview["taken_in"]:
        counts[(row["event"], row["service"])] = row["count"]
        end = (row["event"], "")
        counts[end] = max(counts.get(end, 0), row["count"])
    return diagrams.choreography(registry, "live", counts)


def state_machine(registry: Registry, overview: Mapping[str, Any]) -> str:
    """The state machine's DOT, each state with how many sagas are in it."""
    return diagrams.state_machine(registry, "live", overview["counts"]["state"])


def saga_path(registry: Registry, t: Trace) -> str:
    """The path one saga took on the state machine (`saga trace --dot`)."""
    return diagrams.saga_path(registry, t.saga_id, t.state, t.visited, t.taken)


async def svg(source: str) -> bytes:
    """`source` drawn as SVG by `dot`; raises `DrawingFailed`."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "dot",
            "-Tsvg",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise DrawingFailed(f"Graphviz 'dot' could not be run: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(source.encode()), _DOT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        raise DrawingFailed(f"dot took over {_DOT_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        why = (err.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise DrawingFailed(f"dot failed: {why}")
    return out
