"""Load a registry file: read, check structure, build the model, check meaning."""

from __future__ import annotations

from pathlib import Path

from codegen.build import build_registry
from codegen.errors import RegistryInvalid
from codegen.model import Registry
from codegen.semantics import check_semantics
from codegen.source import load_document
from codegen.structure import check_structure


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
    if problems:
        raise RegistryInvalid(problems)
    return registry
