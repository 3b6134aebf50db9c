"""Property tests of the registry loader: whatever bytes a registry file holds,
`load_registry` returns a registry or raises a `CodegenError` whose every line is
`path:line:col: message`. No other exception (no traceback) gets out, aliases cannot make
it hang, and the same file always gives the same answer.

Most documents are mutations of the real registries (lines deleted, duplicated, swapped or
re-indented, spans overwritten with YAML punctuation or invalid bytes, values retyped, keys
renamed, anchors and aliases added), so that they reach every stage of the loader: the
YAML parser, the structure check and the meaning checks. Some are wholly random bytes.

The examples are derandomized: each property draws the same documents on every run, so CI
is reproducible and a failure there fails the same way locally. Hypothesis prints the
falsifying example, a short description of its mutations, and a diff against the registry
it came from. To explore fresh random documents instead (saved to `.hypothesis/`), set
SAGA_FUZZ_EXAMPLES to a number of examples per property:

    SAGA_FUZZ_EXAMPLES=5000 pytest tests/test_loader_properties.py
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from saga_registry.registry import CodegenError, load_registry
from saga_registry.registry.source import MAX_NODES
from tests.helpers import ORDERS, TRIP

SOURCES = {"checkout": ORDERS.read_bytes(), "trip": TRIP.read_bytes()}

_FUZZ = int(os.environ.get("SAGA_FUZZ_EXAMPLES", "0"))


def examples(n: int) -> settings:
    """`n` derandomized examples (or SAGA_FUZZ_EXAMPLES random ones); no deadline, since a
    slow CI machine is not a bug."""
    return settings(
        max_examples=_FUZZ or n,
        deadline=None,
        derandomize=not _FUZZ,
        print_blob=bool(_FUZZ),
        suppress_health_check=[HealthCheck.too_slow],
    )


# -- checking one file ------------------------------------------------------------------

_POSITIONED = r"(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*): \S.*"
_YAML_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def outcome(path: Path) -> str:
    """What loading `path` gives: `valid <registry>`, or the error text once every line of
    it is checked to be `path:line:col: message` with the line inside the file."""
    try:
        registry = load_registry(path)
    except CodegenError as exc:
        text = str(exc)
        lines = text.splitlines()
        assert lines, f"an empty error: {exc!r}"
        pattern = re.compile(re.escape(str(path)) + ":" + _POSITIONED)
        # YAML counts \r\n, \r, \n, NEL, LS and PS as line breaks; the end of the
        # stream may be on the line after the last.
        decoded = path.read_bytes().decode("utf-8", errors="replace")
        last_line = len(_YAML_BREAKS.split(decoded))
        for line in lines:
            match = pattern.fullmatch(line)
            assert match, f"not `path:line:col: message`: {line!r}\nin the error:\n{text}"
            assert int(match["line"]) <= last_line + 1, f"past the end of the file: {line!r}"
        return text
    return f"valid {registry!r}"


def load_bytes(data: bytes) -> str:
    """Write `data` to a fresh file and check what loading it gives."""
    # A temporary directory per example: pytest's `tmp_path` is shared by all the examples.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "saga.yaml"
        path.write_bytes(data)
        return outcome(path)


# -- mutations ----------------------------------------------------------------------------

_PUNCTUATION = [*":{}[]&*!|>'\"%@`#,-?<=~\\ ", "\t", "\n", "\r", "\x00"]
_ALPHABET = st.sampled_from(
    [*_PUNCTUATION, "a", "Z", "0", "9", "_", ".", "$", "é", "\x85", "\u2028", "\ufeff", "\x1b"]
)
_TEXT = st.text(_ALPHABET, max_size=12)
_BYTES = st.one_of(_TEXT.map(str.encode), st.binary(max_size=6))
"""Text rich in YAML punctuation, or raw bytes (mostly not UTF-8)."""

_VALUES = st.one_of(
    st.sampled_from(
        [
            "~",
            "null",
            "",
            "''",
            "[]",
            "{}",
            "[1, [2, {a: b}]]",
            "{a: 1, b: [x, y]}",
            "{on: X, from: [a, b]}",
            "true",
            "yes",
            "on",
            ".inf",
            "-.inf",
            ".nan",
            "0x1F",
            "0o17",
            "1_000",
            "190:20:30",
            "1:" * 200 + "0.5",
            "1" + "0" * 5000,
            "2024-02-29",
            "2023-02-30",
            "0000-01-01",
            "2001-12-14t21:59:43.10-99:00",
            "!!int abc",
            "!!int ''",
            "!!float ''",
            "!!bool maybe",
            "!!timestamp yesterday",
            "!!str [a]",
            "!!map x",
            "!!binary aGVsbG8=",
            "!!set {a, b}",
            "!!python/name:os.system",
            "!custom x",
            "*undefined",
            "&lonely x",
            "|\n  a block\n",
            ">-",
            '"\\x00 \\n \\u2028 \\e"',
            "'it''s'",
            "? a\n: b",
            # For the places that want a regex, a number of seconds or a name:
            "'('",
            "'a{4294967296}'",
            "'" + "(" * 1000 + ")" * 1000 + "'",
            "1" + "0" * 400,
            "1e400",
            "0",
            "-1",
            "OrderCreated",
            "new",
        ]
    ),
    st.integers().map(str),
    st.floats().map(repr),
    _TEXT,
)
"""Values of another type than the one they replace (numbers, lists, maps, nulls, dates,
explicit tags) or no valid YAML at all."""

_KEYS = st.one_of(
    st.sampled_from(
        [
            "<<",
            "=",
            "?",
            "on",
            "1",
            "true",
            "null",
            "[a, b]",
            "{a: b}",
            "&k key",
            "*k",
            "!!python/object key",
            '"a\\nb"',
            '"a\\u2028b"',
            '"\\x1b[31mred"',
            "'quoted'",
            "version",
            "OrderCreated",
            "Booking",
            "new",
            "order_id",
            # Keys the schema knows, in places it may not expect them:
            "pattern",
            "within_s",
            "minimum",
            "maxLength",
            "type",
            "$ref",
            "enum",
            "items",
            "properties",
            "required",
            "terminal",
            "payload",
            "emits",
        ]
    ),
    _TEXT,
)
"""Keys that YAML reads as something else than a name, names from the registries (to make
duplicates), and random text."""

_VALUE_SPAN = re.compile(
    rb": (\"(?:[^\"\\\r\n]|\\.)*\"|'(?:[^'\r\n]|'')*'|[^\s,{}\[\]#'\"][^,{}\[\]#\r\n]*)"
)
_KEY_SPAN = re.compile(
    rb"^[ ]*(?:- )?([^\s#:{}\[\]-][^:#\r\n{}]*):(?=[ \r\n])|[{,] ?([^\s:,{}\[\]]+):", re.M
)

T = TypeVar("T")
Mutation = Callable[[st.DrawFn, bytes], tuple[bytes, str]]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - data.rfind(b"\n", 0, offset)
    return f"{line}:{col}"


def _spans(pattern: re.Pattern[bytes], data: bytes) -> list[tuple[int, int]]:
    return [m.span(m.lastindex or 0) for m in pattern.finditer(data)]


class NoSite(Exception):
    """The document has nothing this mutation applies to (it was truncated, say)."""


def _choose(draw: st.DrawFn, sites: list[T]) -> T:
    if not sites:
        raise NoSite
    return draw(st.sampled_from(sites))


def delete_lines(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(i + 1, min(len(lines), i + 10)))
    return b"".join(lines[:i] + lines[j:]), f"delete lines {i + 1}-{j}"


def duplicate_lines(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(i + 1, min(len(lines), i + 10)))
    k = draw(st.integers(0, len(lines)))
    return b"".join(lines[:k] + lines[i:j] + lines[k:]), f"copy lines {i + 1}-{j} to {k + 1}"


def swap_lines(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines), f"swap lines {i + 1} and {j + 1}"


def reindent_line(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    indent = draw(
        st.sampled_from([b"", b" ", b"\t", b" \t", b"\t "]) | st.integers(0, 12).map(b" ".__mul__)
    )
    lines[i] = indent + lines[i].lstrip(b" \t")
    return b"".join(lines), f"indent line {i + 1} by {indent!r}"


def overwrite_span(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 10)))
    new = draw(_BYTES)
    what = f"at {_where(data, start)} {data[start:end]!r} -> {new!r}"
    return data[:start] + new + data[end:], what


def truncate(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    end = draw(st.integers(0, len(data)))
    return data[:end], f"truncate at {_where(data, end)}"


def retype_value(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    spans = _spans(_VALUE_SPAN, data)
    start, end = _choose(draw, spans)
    new = draw(_VALUES).encode()
    return data[:start] + new + data[end:], f"value at {_where(data, start)} -> {new[:60]!r}"


def rename_key(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    spans = _spans(_KEY_SPAN, data)
    start, end = _choose(draw, spans)
    new = draw(_KEYS).encode()
    return data[:start] + new + data[end:], f"key at {_where(data, start)} -> {new!r}"


def add_anchor_and_aliases(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    """An anchor on a value or on a block (`key: &a`), and aliases or merges (`<<: *a`) of
    it elsewhere: before it (undefined), inside it (recursive) or after it."""
    name = draw(st.sampled_from([b"a", b"b"]))
    edits: list[tuple[int, int, bytes]] = []
    values = _spans(_VALUE_SPAN, data)
    blocks = [m.end() for m in re.finditer(rb":(?=\r?\n)", data)]
    if draw(st.booleans()) or not blocks:
        start, _ = _choose(draw, values)
        edits.append((start, start, b"&" + name + b" "))
    else:
        at = _choose(draw, blocks)
        edits.append((at, at, b" &" + name))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            start, end = _choose(draw, values)
            edits.append((start, end, b"*" + name))
        else:
            lines = _lines(data)
            i = draw(st.integers(0, len(lines) - 1))
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip(b" "))]
            at = sum(len(line) for line in lines[:i])
            edits.append((at, at, indent + b"<<: *" + name + b"\n"))
    out = data
    # Apply from the end so that earlier offsets stay right; drop overlapping edits.
    last = len(data) + 1
    done = []
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        if end <= last and not (start == end == last):
            out = out[:start] + new + out[end:]
            last = start
            done.append(f"{_where(data, start)} {new!r}")
    return out, "anchor and aliases: " + ", ".join(reversed(done))


MUTATIONS: list[Mutation] = [
    retype_value,
    rename_key,
    add_anchor_and_aliases,
    delete_lines,
    duplicate_lines,
    swap_lines,
    reindent_line,
    overwrite_span,
    truncate,
]


class Mutated:
    """A registry after some mutations. Its repr (what Hypothesis prints of a failing
    example) is short: the mutations; `diff()` shows the text they changed."""

    def __init__(self, source: str, steps: list[str], data: bytes) -> None:
        self.source = source
        self.steps = steps
        self.data = data

    def __repr__(self) -> str:
        return f"<{self.source}: {'; '.join(self.steps)}>"

    def diff(self) -> str:
        old = _visible(SOURCES[self.source].decode("utf-8"))
        new = _visible(self.data.decode("utf-8", errors="backslashreplace"))
        return "\n".join(difflib.unified_diff(old, new, self.source, "mutated", lineterm="", n=1))


def _visible(text: str) -> list[str]:
    """The lines of `text`, with invisible characters escaped."""
    return [
        "".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in text.split("\n")
    ]


@st.composite
def mutated_registries(draw: st.DrawFn) -> Mutated:
    source = draw(st.sampled_from(sorted(SOURCES)))
    data = SOURCES[source]
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        mutate = draw(st.sampled_from(MUTATIONS))
        try:
            data, step = mutate(draw, data)
        except NoSite:
            continue
        steps.append(f"{mutate.__name__}: {step}")
    return Mutated(source, steps, data)


# -- properties ---------------------------------------------------------------------------


def test_the_registries_mutated_here_are_valid() -> None:
    for data in SOURCES.values():
        assert load_bytes(data).startswith("valid ")


@examples(800)
@given(doc=mutated_registries())
def test_a_mutated_registry_loads_or_is_refused_with_positions(doc: Mutated) -> None:
    note(doc.diff())
    load_bytes(doc.data)


@examples(500)
@given(
    data=st.binary(max_size=400)
    | st.text(_ALPHABET, max_size=300).map(str.encode)
    | st.text(max_size=200).map(str.encode)
)
def test_random_bytes_are_refused_with_positions(data: bytes) -> None:
    load_bytes(data)


@examples(100)
@given(doc=mutated_registries())
def test_loading_is_deterministic(doc: Mutated) -> None:
    note(doc.diff())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "saga.yaml"
        path.write_bytes(doc.data)
        first = outcome(path)
        assert outcome(path) == first
        try:
            text = doc.data.decode("utf-8")
        except UnicodeDecodeError:
            return
        try:
            again = f"valid {load_registry(path, text)!r}"
        except CodegenError as exc:
            again = str(exc)
        assert again == first, "the file and its text load differently"


@st.composite
def alias_bombs(draw: st.DrawFn) -> tuple[str, bytes]:
    """Billion laughs: each level holds `width` aliases of the level below, so the document
    is small but expands to more than MAX_NODES values; alone or inside a registry."""
    width = draw(st.integers(2, 12))
    depth = 1
    while width**depth <= MAX_NODES:
        depth += 1
    depth += draw(st.integers(0, 3))
    style = draw(st.sampled_from(["flow list", "block list", "flow map"]))
    lines = []
    for level in range(depth + 1):
        items = ["lol"] * width if level == 0 else [f"*l{level - 1}"] * width
        if style == "flow list":
            lines.append(f"l{level}: &l{level} [{', '.join(items)}]")
        elif style == "flow map":
            pairs = ", ".join(f"k{i}: {item}" for i, item in enumerate(items))
            lines.append(f"l{level}: &l{level} {{{pairs}}}")
        else:
            lines.append(f"l{level}: &l{level}")
            lines += [f"  - {item}" for item in items]
    bomb = "\n".join(lines) + "\n"
    where = draw(st.sampled_from([None, *sorted(SOURCES)]))
    if where is None:
        return f"{style} {width}^{depth}", bomb.encode()
    # After `version: 1`, as more top-level keys of a real registry.
    registry = SOURCES[where].decode("utf-8")
    at = registry.index("version: 1\n") + len("version: 1\n")
    return f"{style} {width}^{depth} in {where}", (registry[:at] + bomb + registry[at:]).encode()


@examples(2)  # 1-2 s each: the converter walks MAX_NODES values before it stops
@given(bomb=alias_bombs())
@example(
    bomb=(
        "billion laughs",
        b"".join(
            b"l%d: &l%d [%s]\n" % (i, i, b", ".join([b"*l%d" % (i - 1) if i else b"lol"] * 10))
            for i in range(10)
        ),
    )
)
def test_alias_bombs_are_refused_quickly(bomb: tuple[str, bytes]) -> None:
    _, data = bomb
    started = time.monotonic()
    text = load_bytes(data)
    elapsed = time.monotonic() - started
    assert f"expands to more than {MAX_NODES} values" in text, text
    assert len(text.splitlines()) == 1, text
    # The node budget stops it after MAX_NODES values (about a second); without it,
    # a billion values would take hours.
    assert elapsed < 30, f"took {elapsed:.1f} s"


@examples(10)
@given(width=st.integers(2, 8), depth=st.integers(2, 6))
def test_merge_key_bombs_do_not_expand(width: int, depth: int) -> None:
    """Merging the same mapping `width` times at each level. PyYAML before 6.0.4 copied
    its keys each time (pyyaml#897): width**depth keys, each a "duplicate key" problem,
    before the node budget could count them. Kept small so that it fails, not hangs."""
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(width)) + "}"]
    lines += [
        f"m{n}: &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * width)}], own{n}: {n}}}"
        for n in range(1, depth + 1)
    ]
    text = load_bytes(("\n".join(lines) + "\n").encode())
    assert "duplicate key" not in text, text[:1000]
