"""Payload patterns, under the regex engine of the generated code.

The generated events are pydantic models, and pydantic-core matches `pattern` with the
Rust `regex` crate: no look-around, no back-references, and matching time linear in the
text. The registry is checked with that same engine, so a pattern accepted here works in
the generated code, and checking a value against it can never backtrack for minutes
(Python's `re`, which jsonschema uses by default, can: `^(a+)+$` against `aaa…b`).
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from pydantic_core import SchemaError, SchemaValidator, core_schema

_SHORT = reprlib.Repr()
_SHORT.maxstring = 80  # quotes a pattern in a problem, cut short if long


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> SchemaValidator:
    return SchemaValidator(core_schema.str_schema(pattern=pattern))


def pattern_problem(pattern: str) -> str | None:
    """Why the generated code could not use `pattern`, or None if it can."""
    try:
        _compiled(pattern)
    except SchemaError as exc:
        rust_reason = exc
    else:
        return None
    try:
        # Not a regex in any common dialect: Python's message points at the fault.
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        # `a{4294967296}` overflows, a thousand nested groups recurse too deep.
        why = "groups nested too deeply" if isinstance(exc, RecursionError) else exc
        return f"pattern is not a regex: {why}"
    # A regex elsewhere, but it uses what the Rust engine lacks (look-around, back-
    # references). pydantic-core quotes the pattern with a caret under the fault, then
    # one line "error: <reason>"; the reason alone fits on the problem's line.
    lines = [ln.strip() for ln in str(rust_reason).splitlines() if ln.strip()]
    reason = next(
        (ln[len("error: ") :] for ln in lines if ln.startswith("error: ")),
        # Other failures (a pattern too large once compiled) are one "SchemaError:" line.
        lines[-1].removeprefix("SchemaError: ") if lines else "unsupported",
    )
    return (
        f"pattern {_SHORT.repr(pattern)} is not accepted by the regex engine of the generated code "
        f"(Rust regex, as pydantic uses): {reason}"
    )


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches somewhere in `text` (JSON Schema's meaning of `pattern`),
    in time linear in `text`. The pattern must have passed `pattern_problem`."""
    return _compiled(pattern).isinstance_python(text)


def _pattern_keyword(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# jsonschema's `extend` has no annotations; it returns a validator class.
PayloadValidator: type[Draft202012Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern_keyword}
)
"""A JSON Schema validator whose `pattern` keyword uses the Rust engine (see above)."""
