"""The structural check: the registry against the JSON Schema shipped with codegen."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from saga_registry.registry.errors import Problem
from saga_registry.registry.names import did_you_mean
from saga_registry.registry.source import Document, JsonPath


@cache
def registry_schema() -> dict[str, Any]:
    """The JSON Schema of a registry document (version 1)."""
    text = (
        resources.files("saga_registry.registry")
        .joinpath("registry.schema.json")
        .read_text("utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(registry_schema())


def _dotted(path: JsonPath) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _problems_of(error: ValidationError, doc: Document) -> list[Problem]:
    path: JsonPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(schema.get("properties", {}))
        patterns = schema.get("patternProperties", {})
        extra = [
            k
            for k in error.instance
            if k not in allowed and not any(re.search(p, k) for p in patterns)
        ]
        where = _dotted(path)
        return [
            Problem(
                doc.source.at((*path, k)), f"unknown key '{k}' in {where}{_key_hint(k, allowed)}"
            )
            for k in extra
        ]
    if isinstance(error.instance, bool) and path in doc.source.booleans:
        written = doc.source.booleans[path]
        if written.lower() not in ("true", "false"):
            # A YAML 1.1 word (on/off/yes/no/y/n) where the schema wanted something else,
            # most often a name: say why it became a boolean.
            message = (
                f"`{written}` was read as {str(error.instance).lower()}: YAML 1.1 reads an "
                f'unquoted {written} as a boolean; write it as "{written}"'
            )
            return [Problem(doc.source.value_at(path), f"{_dotted(path)}: {message}")]
    if error.validator == "required":
        return [Problem(doc.source.value_at(path), f"{_dotted(path)}: {error.message}")]
    if error.validator == "type":
        got = type(error.instance).__name__
        want: Any = error.validator_value
        want_s = want if isinstance(want, str) else " or ".join(str(w) for w in want)
        return [
            Problem(doc.source.value_at(path), f"{_dotted(path)}: expected {want_s}, got {got}")
        ]
    return [Problem(doc.source.value_at(path), f"{_dotted(path)}: {error.message}")]


def _key_hint(key: str, allowed: set[str]) -> str:
    """ " (did you mean 'x'? expected one of: …)", or less when nothing is known."""
    if not allowed:
        return ""
    close = did_you_mean(key, allowed)
    close = f"{close[2:-1]} " if close else ""  # " (did you mean 'x'?)" without parentheses
    return f" ({close}expected one of: {', '.join(sorted(allowed))})"


def check_structure(doc: Document) -> list[Problem]:
    """Every structural problem of `doc`, each with its place (empty when the shape is right)."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(doc.data):
        # Several keywords can fail on one value (a boolean hint would repeat): once each.
        problems.extend(p for p in _problems_of(error, doc) if p not in problems)
    return problems
