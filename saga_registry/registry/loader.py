"""Load a registry file: read, check structure, build the model, check meaning."""

from __future__ import annotations

from pathlib import Path

from saga_registry.registry.build import build_registry
from saga_registry.registry.errors import RegistryInvalid
from saga_registry.registry.evolution import check_evolution
from saga_registry.registry.model import Registry
from saga_registry.registry.semantics import check_semantics
from saga_registry.registry.source import load_document
from saga_registry.registry.structure import check_structure


def load_registry(path: Path | str, text: str | None = None) -> Registry:
    """The validated registry at `path` (or parsed from `text`, named `path`).

    Raises `RegistryNotFound` if it cannot be read, and `RegistryInvalid` carrying every
    problem found (each with `path:line:col`) if it is not a usable registry.
    """
    doc = load_document(path, text)
    problems = check_structure(doc)
    if problems:
        # A wrongly shaped document cannot be built into the model safely.
        raise RegistryInvalid(problems)
    registry, problems = build_registry(doc)
    problems += check_semantics(registry, doc)
    problems += check_evolution(registry, doc)
    if problems:
        raise RegistryInvalid(problems)
    return registry
