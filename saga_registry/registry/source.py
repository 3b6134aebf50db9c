"""Read a registry file into plain data, remembering where every key and value came from.

YAML is composed with PyYAML's safe loader into nodes (nothing is constructed from tags,
nothing is executed), then converted here so that every value keeps its source position.
Duplicate mapping keys, which PyYAML would silently collapse, are reported.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saga_registry.registry.errors import Location, Problem, RegistryInvalid, RegistryNotFound

JsonPath = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Positions of the keys and values of a loaded document, by JSON path."""

    path: str
    values: dict[JsonPath, Location] = field(default_factory=dict)
    keys: dict[JsonPath, Location] = field(default_factory=dict)
    booleans: dict[JsonPath, str] = field(default_factory=dict)
    """The text of each value YAML read as a boolean, as written (`on`, `no`, `True`)."""

    def at(self, json_path: JsonPath) -> Location:
        """Where `json_path` is written: its key if it has one, else its value, else the
        nearest enclosing place that exists."""
        for depth in range(len(json_path), -1, -1):
            prefix = json_path[:depth]
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return Location(self.path, 1, 1)

    def value_at(self, json_path: JsonPath) -> Location:
        """Where the value at `json_path` is written (falls back like `at`)."""
        return self.values.get(json_path) or self.at(json_path)


@dataclass
class Document:
    """A loaded registry: its data and where each part of it was written."""

    data: Any
    source: SourceMap


# libyaml's parser when PyYAML was built with it (the wheels are): same nodes and marks,
# several times faster. Both are safe loaders: they build nodes, never objects.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_NODES = 500_000
"""The most values a registry may expand to, aliases included."""

MAX_DEPTH = 100
"""The deepest a value may be nested (a registry needs about 20 levels); deeper ones would
overflow the stack of the checks that walk the document."""


class _TooLarge(Exception):
    def __init__(self, where: Location) -> None:
        self.where = where


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}"
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


def _loc(path: str, node: yaml.Node) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
"""What YAML counts as a line break."""


def _loc_in(path: str, text: str, index: int) -> Location:
    """Where `text[index]` is, counting lines as YAML does."""
    lines = _LINE_BREAK.split(text[:index])
    return Location(path, len(lines), len(lines[-1]) + 1)


class _Converter:
    def __init__(self, path: str) -> None:
        self.source = SourceMap(path)
        self.problems: list[Problem] = []
        self.budget = MAX_NODES
        self._constructor = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, json_path: JsonPath) -> Any:
        self.budget -= 1
        if self.budget < 0:
            # Aliases can make a small file expand exponentially ("billion laughs").
            raise _TooLarge(_loc(self.source.path, node))
        self.source.values[json_path] = _loc(self.source.path, node)
        if len(json_path) > MAX_DEPTH:
            self.problems.append(
                Problem(_loc(self.source.path, node), f"nested deeper than {MAX_DEPTH} levels")
            )
            return None
        if node.tag not in _PLAIN_TAGS:
            # Tags are how YAML asks for objects to be built; a registry is plain data.
            self.problems.append(
                Problem(_loc(self.source.path, node), f"YAML tag {node.tag!r} is not allowed")
            )
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, json_path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*json_path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        # The safe constructor resolves plain scalars to str/int/float/bool/None only.
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (ValueError, ArithmeticError, LookupError, AttributeError):
            # It trusts the text to fit the tag: `2023-02-30`, a 5000-digit integer or
            # `!!int abc` make it raise.
            kind = node.tag.rsplit(":", 1)[-1]
            message = f"YAML: {reprlib.repr(node.value)} is not a valid {kind}"
            self.problems.append(Problem(_loc(self.source.path, node), message))
            return None
        if isinstance(value, bool):
            self.source.booleans[json_path] = str(node.value)
        return value

    def _mapping(self, node: yaml.MappingNode, json_path: JsonPath) -> dict[str, Any]:
        self._constructor.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where = _loc(self.source.path, key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Problem(where, "a key must be a plain name, not a collection"))
                continue
            # Keys are names: take their text as written, so that YAML 1.1 does not turn
            # `on:` or `no:` into booleans.
            key = str(key_node.value)
            if key in out:
                first = self.source.keys[(*json_path, key)]
                self.problems.append(
                    Problem(where, f"duplicate key '{key}' (first defined at line {first.line})")
                )
                continue
            self.source.keys[(*json_path, key)] = where
            out[key] = self.convert(value_node, (*json_path, key))
        return out


def load_document(path: Path | str, text: str | None = None) -> Document:
    """Read and convert a registry file.

    Raises `RegistryNotFound` when the file cannot be read and `RegistryInvalid` for YAML
    syntax errors, duplicate keys, non-string keys or an empty document.
    """
    name = str(path)
    if text is None:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise RegistryNotFound(f"{name}: no such file") from None
        except OSError as exc:
            raise RegistryNotFound(f"{name}: cannot read: {exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            good = raw[: exc.start].decode("utf-8")
            where = _loc_in(name, good, len(good))
            message = f"not UTF-8 text: byte 0x{raw[exc.start]:02x} ({exc.reason})"
            raise RegistryInvalid([Problem(where, message)]) from None
    try:
        nodes = list(yaml.compose_all(text, Loader=_SAFE_LOADER))
    except yaml.reader.ReaderError as exc:
        # A character YAML forbids (NUL, most control characters); the error's position
        # counts bytes or characters depending on the parser, so find the character.
        where = _loc_in(name, text, max(text.find(chr(exc.character)), 0))
        message = f"YAML: {exc.reason}: {chr(exc.character)!r}"
        raise RegistryInvalid([Problem(where, message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise RegistryInvalid(
            [Problem(Location(name, line, col), f"YAML syntax: {what}")]
        ) from None
    except yaml.YAMLError as exc:
        raise RegistryInvalid([Problem(Location(name, 1, 1), f"YAML: {exc}")]) from None
    if not nodes or nodes[0] is None:
        raise RegistryInvalid([Problem(Location(name, 1, 1), "the registry is empty")])
    if len(nodes) > 1:
        where = _loc(name, nodes[1])
        raise RegistryInvalid([Problem(where, "a registry is one YAML document, found several")])
    converter = _Converter(name)
    try:
        data = converter.convert(nodes[0], ())
    except yaml.YAMLError as exc:  # e.g. an unknown tag, refused by the safe constructor
        mark = getattr(exc, "problem_mark", None)
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name, 1, 1)
        raise RegistryInvalid([Problem(where, f"YAML: {getattr(exc, 'problem', exc)}")]) from None
    except _TooLarge as exc:
        message = f"the document expands to more than {MAX_NODES} values (aliases?)"
        raise RegistryInvalid([Problem(exc.where, message)]) from None
    except RecursionError:
        raise RegistryInvalid([Problem(Location(name, 1, 1), "YAML nested too deeply")]) from None
    if converter.problems:
        raise RegistryInvalid(converter.problems)
    return Document(data, converter.source)
