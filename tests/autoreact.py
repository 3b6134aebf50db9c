"""Reactions for any registry, for end-to-end tests of the generic engine: each reaction
emits the first event the registry allows it, with a payload made from the schema.

Copied into a generated test project and imported there (it reads that project's
`registry/saga.yaml` and `handlers` package)."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

from saga_registry.registry import load_registry
from saga_registry.registry.model import FieldSpec, Registry


@cache
def project_registry() -> Registry:
    """The registry of the project this file was copied into."""
    return load_registry(Path(__file__).resolve().parent / "registry" / "saga.yaml")


_CANDIDATES = ["AAA", "2026-01-01", "ABC123", "AB1234", "x", "a", "1"]


def sample(f: FieldSpec) -> Any:
    """A value that satisfies `f`."""
    if f.enum:
        return f.enum[0]
    if f.type == "string":
        size = max(f.min_length or 1, 1)
        if f.pattern:
            for text in _CANDIDATES:
                if re.search(f.pattern, text) and size <= len(text) <= (f.max_length or 99):
                    return text
        return "x" * size
    if f.type == "integer":
        return int(f.minimum) if f.minimum is not None else 1
    if f.type == "number":
        return float(f.minimum) if f.minimum is not None else 1.0
    if f.type == "boolean":
        return False
    if f.type == "array":
        assert f.items is not None
        return [sample(f.items)] * max(f.min_items or 1, 1)
    return {p.name: sample(p) for p in f.properties if p.required}


def payload(registry: Registry, event_name: str, saga_id: str) -> dict[str, Any]:
    """A valid payload of `event_name` for saga `saga_id`."""
    event = registry.event(event_name)
    data = {f.name: sample(f) for f in event.fields if f.required}
    data[registry.key] = saga_id
    return data


def make(name: str) -> type:
    """The class of service `name`, with a reaction for every consumed event."""
    registry = project_registry()
    spec = registry.service(name)
    base = getattr(importlib.import_module(f"handlers.base.{spec.module}"), f"{name}Base")
    events = importlib.import_module("handlers.events")
    methods: dict[str, Any] = {}
    for r in spec.reactions:
        emits = r.emits

        async def react(self: Any, event: Any, ctx: Any, _emits: Any = emits) -> Any:
            if name in os.environ.get("AUTOREACT_FAIL", "").split(","):
                raise RuntimeError(f"{name} is broken (AUTOREACT_FAIL)")
            if name in os.environ.get("AUTOREACT_HANG", "").split(","):
                await asyncio.sleep(3600)  # a reaction stuck on a dead remote call
            if not _emits:
                return None
            data = payload(registry, _emits[0], ctx.saga_id)
            return events.EVENT_TYPES[_emits[0]].from_dict(data)

        methods[base.handler_names[r.event]] = react
    return type(name, (base,), methods)
