"""What a name in the registry may be. Names become Python identifiers, module names,
file names and Kafka topic names, so they are checked strictly: no quotes, dots,
slashes or anything else that could escape the code or the folder they land in."""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Iterable, Sequence

PASCAL = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
SNAKE = re.compile(r"[a-z][a-z0-9_]{0,63}")
TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")

# Attributes of the generated event base (a pydantic model) that a field must not shadow.
RESERVED_FIELDS = frozenset(
    {
        "construct",
        "copy",
        "dict",
        "json",
        "parse_file",
        "parse_obj",
        "parse_raw",
        "schema",
        "schema_json",
        "update_forward_refs",
        "validate",
        "from_json",
        "to_json",
        "from_dict",
        "to_dict",
        "event_type",
        "kind",
        "producer",
        "stage",
        "payload_schema",
    }
)
# Names the generated modules define for themselves.
RESERVED_TYPES = frozenset({"Event", "EventBase", "EventKind", "EVENT_TYPES", "Reaction"})


def pascal_problem(name: str, what: str) -> str | None:
    """Why `name` is not a valid PascalCase name for `what`, or None if it is."""
    if not PASCAL.fullmatch(name):
        return (
            f"{what} name {name!r} is not a valid name: use PascalCase letters and digits "
            "(first an uppercase letter, at most 64)"
        )
    if name in RESERVED_TYPES or keyword.iskeyword(name):
        return f"{what} name {name!r} is reserved"
    return None


def snake_problem(name: str, what: str) -> str | None:
    """Why `name` is not a valid snake_case name for `what`, or None if it is."""
    if not SNAKE.fullmatch(name):
        return (
            f"{what} name {name!r} is not a valid name: use lowercase letters, digits and "
            "underscores (first a letter, at most 64)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"{what} name {name!r} is a Python keyword"
    return None


def field_problem(name: str) -> str | None:
    """Why `name` cannot be a payload field, or None if it can."""
    problem = snake_problem(name, "field")
    if problem:
        return problem
    if name in RESERVED_FIELDS or name.startswith("model_"):
        return f"field name {name!r} is reserved by the generated event classes"
    return None


def topic_problem(name: str) -> str | None:
    """Why `name` is not a legal Kafka topic name, or None if it is."""
    if not TOPIC.fullmatch(name) or name in {".", ".."}:
        return f"topic name {name!r} is not legal: use letters, digits, '.', '_' and '-'"
    return None


def unknown(kind: str, name: str, known: Sequence[str]) -> str:
    """The one line saying `name` is no known `kind`, with the closest and all known."""
    hint = did_you_mean(name, known)
    return f"unknown {kind} {name!r}{hint}: the registry has {', '.join(known)}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A hint naming the known name closest to `name` (ignoring case), as
    " (did you mean 'X'?)", or "" when none is close or `name` is not printable."""
    if not name.isprintable():
        # A name holding line breaks or invisible characters is not a near-miss of a
        # known one; the problem's line shows those characters escaped instead.
        return ""
    by_folded: dict[str, str] = {}
    for k in known:
        by_folded.setdefault(k.casefold(), k)
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean '{by_folded[close[0]]}'?)" if close else ""
