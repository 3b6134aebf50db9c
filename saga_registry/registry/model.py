"""The registry as typed, immutable values: what validation proved and codegen consumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["domain", "failure", "compensation"]
FieldType = Literal["string", "integer", "number", "boolean", "array", "object"]
EVENT_KINDS: tuple[EventKind, ...] = ("domain", "failure", "compensation")


def snake_case(name: str) -> str:
    """`OrderHistory` -> `order_history`, `OMS` -> `oms`, `HTTPError` -> `http_error`."""
    step = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", step).lower()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field (or an array's item), with its `$ref`s resolved."""

    name: str
    type: FieldType
    required: bool = True
    description: str = ""
    enum: tuple[str | int, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    min_items: int | None = None
    max_items: int | None = None
    items: FieldSpec | None = None
    properties: tuple[FieldSpec, ...] = ()

    def json_schema(self) -> dict[str, Any]:
        """This field as a JSON Schema fragment (keys sorted by the caller when dumped)."""
        schema: dict[str, Any] = {"type": self.type}
        optional: dict[str, Any] = {
            "description": self.description or None,
            "enum": list(self.enum) or None,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": self.pattern,
            "minItems": self.min_items,
            "maxItems": self.max_items,
        }
        schema.update({k: v for k, v in optional.items() if v is not None})
        if self.items is not None:
            schema["items"] = self.items.json_schema()
        if self.type == "object":
            schema.update(object_schema(self.properties))
        return schema


def object_schema(properties: tuple[FieldSpec, ...]) -> dict[str, Any]:
    """The JSON Schema body of an object with these fields: closed to unknown keys."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in properties if f.required],
        "properties": {f.name: f.json_schema() for f in properties},
    }


@dataclass(frozen=True, slots=True)
class Upcast:
    """How a payload of version `from_version` of an event reads as version
    `from_version + 1`: fields renamed, then values mapped, then defaults added."""

    from_version: int
    rename: tuple[tuple[str, str], ...] = ()
    """(old name, new name) of top-level fields."""
    values: tuple[tuple[str, tuple[tuple[Any, Any], ...]], ...] = ()
    """Per field (by its new name): (old value, new value) pairs."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """(field, value) for fields the older version lacks."""


@dataclass(frozen=True, slots=True)
class Event:
    """An event type: its kind, producer, stage texts and payload fields (those of its
    current `version`; `upcasts` read the older versions as this one)."""

    name: str
    kind: EventKind
    producer: str
    stage: tuple[tuple[str, str], ...]
    description: str
    fields: tuple[FieldSpec, ...]
    version: int = 1
    upcasts: tuple[Upcast, ...] = ()
    """One per older version, in order: `upcasts[i].from_version == i + 1`."""
    undoes: tuple[str, ...] = ()
    """For a compensation: the events whose effect it undoes (a release undoes a
    reservation), which `saga check` requires on every failure path after them."""

    @property
    def stage_en(self) -> str:
        """The stage text in English (the schema requires it)."""
        return dict(self.stage)["en"]

    def payload_schema(self) -> dict[str, Any]:
        """The payload as a JSON Schema object."""
        return object_schema(self.fields)


@dataclass(frozen=True, slots=True)
class Reaction:
    """A service's reaction to one event, and the events it may emit."""

    event: str
    emits: tuple[str, ...]
    description: str = ""
    defer: bool = False
    """The reaction may emit nothing now and answer later (a deadline guards the wait)."""


@dataclass(frozen=True, slots=True)
class Service:
    """A service: the events it starts sagas with and its reactions."""

    name: str
    description: str
    initiates: tuple[str, ...]
    reactions: tuple[Reaction, ...]

    @property
    def module(self) -> str:
        """The Python module name of this service's code."""
        return snake_case(self.name)


@dataclass(frozen=True, slots=True)
class State:
    """A state of the saga state machine."""

    name: str
    description: str = ""
    terminal: bool = False
    outcome: Literal["success", "failure"] | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """`event` moves the saga from any of `sources` to `target`."""

    event: str
    sources: tuple[str, ...]
    target: str


@dataclass(frozen=True, slots=True)
class Deadline:
    """If the saga stays in `state` for `within_s` seconds, `emit` is produced."""

    state: str
    within_s: float
    emit: str
    payload: tuple[tuple[str, Any], ...] = ()
    description: str = ""
    name: str = ""
    """The registry's name for it; `key` falls back to one made of state and event."""

    @property
    def key(self) -> str:
        """The deadline's stable key: what a pending timer is stored under, so that
        reordering or adding deadlines leaves armed timers pointing at theirs."""
        return self.name or f"{self.state}.{self.emit}"


@dataclass(frozen=True, slots=True)
class StateMachine:
    """The per-saga state machine."""

    initial: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    deadlines: tuple[Deadline, ...] = ()

    def state(self, name: str) -> State:
        """The state called `name` (KeyError if none)."""
        for s in self.states:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def terminal_states(self) -> tuple[str, ...]:
        """Names of the terminal states, in registry order."""
        return tuple(s.name for s in self.states if s.terminal)

    def edges(self) -> list[tuple[str, str, str]]:
        """Every (source, event, target) edge, in registry order."""
        return [(src, t.event, t.target) for t in self.transitions for src in t.sources]


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic (or the embedded log's equivalent)."""

    name: str
    partitions: int


@dataclass(frozen=True, slots=True)
class Registry:
    """A whole validated registry."""

    path: str
    name: str
    title: str
    key: str
    events_topic: Topic
    dead_letter_topic: Topic
    services: tuple[Service, ...]
    events: tuple[Event, ...]
    state_machine: StateMachine
    signed_events: bool = False
    """Whether every event must carry its producer's signature (`engine.signing`)."""
    projections: bool = True
    """Whether each service takes in only its projection's events (`registry.projection`)."""
    # Indexes, rebuilt by __post_init__ (also after dataclasses.replace).
    _by_name: dict[str, Event] = field(default_factory=dict, init=False, compare=False, repr=False)
    _consumers: dict[str, list[str]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_name.update({e.name: e for e in self.events})
        for s in self.services:
            for r in s.reactions:
                self._consumers.setdefault(r.event, []).append(s.name)

    def event(self, name: str) -> Event:
        """The event called `name` (KeyError if none)."""
        return self._by_name[name]

    def service(self, name: str) -> Service:
        """The service called `name` (KeyError if none)."""
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def consumers(self, event: str) -> list[str]:
        """Names of the services reacting to `event`, in registry order."""
        return list(self._consumers.get(event, ()))
