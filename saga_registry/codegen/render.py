"""Render Graphviz sources to SVG with the real `dot`, stamping each picture with the
digest of its source so that staleness can be checked without Graphviz, and without
depending on the bytes a particular Graphviz version writes."""

from __future__ import annotations

import hashlib
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import graphviz

from saga_registry.registry.errors import RenderError

_STAMP = re.compile(rb"<!-- saga-codegen source-sha256: ([0-9a-f]{64}) -->")


def source_digest(dot_source: str) -> str:
    """The sha256 of a diagram's source, as stamped into its SVG."""
    return hashlib.sha256(dot_source.encode()).hexdigest()


def stamp_of(svg: bytes) -> str | None:
    """The source digest stamped into an SVG, or None if it has none."""
    match = _STAMP.search(svg[:4096])
    return match.group(1).decode() if match else None


def dot_available() -> bool:
    """Whether Graphviz's `dot` is on PATH."""
    return shutil.which("dot") is not None


def render_svg(dot_source: str) -> bytes:
    """Render one source to SVG and stamp it; raises `RenderError` if dot fails."""
    try:
        svg: bytes = graphviz.Source(dot_source).pipe(format="svg", quiet=True)
    except graphviz.ExecutableNotFound:
        raise RenderError("Graphviz 'dot' is not installed") from None
    except graphviz.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RenderError(f"dot failed: {detail[-1] if detail else exc}") from None
    stamp = f"<!-- saga-codegen source-sha256: {source_digest(dot_source)} -->\n".encode()
    head, sep, rest = svg.partition(b"?>\n")
    return head + sep + stamp + rest if sep else stamp + svg


def render_all(sources: list[str], workers: int = 4) -> list[bytes]:
    """Render several sources in parallel (each `dot` is its own process)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(render_svg, sources))
