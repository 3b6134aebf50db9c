"""Turn a structurally valid registry document into the typed model, resolving `$ref`s
and checking names and field constraints on the way."""

from __future__ import annotations

import math
from typing import Any

from saga_registry.registry.errors import Problem
from saga_registry.registry.model import (
    Deadline,
    Event,
    FieldSpec,
    Reaction,
    Registry,
    Service,
    State,
    StateMachine,
    Topic,
    Transition,
    Upcast,
)
from saga_registry.registry.names import (
    did_you_mean,
    field_problem,
    pascal_problem,
    snake_problem,
    topic_problem,
)
from saga_registry.registry.patterns import pattern_problem
from saga_registry.registry.source import Document, JsonPath

_CONSTRAINTS_BY_TYPE: dict[str, set[str]] = {
    "string": {"enum", "minLength", "maxLength", "pattern"},
    "integer": {"enum", "minimum", "maximum"},
    "number": {"minimum", "maximum"},
    "boolean": set(),
    "array": {"items", "minItems", "maxItems"},
    "object": {"properties", "required"},
}
_ALL_CONSTRAINTS = set().union(*_CONSTRAINTS_BY_TYPE.values())
_MAX_DEPTH = 8


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.problems: list[Problem] = []
        self.definitions: dict[str, Any] = self.data.get("definitions", {})

    def problem(self, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.doc.source.at(path), message))

    def value_problem(self, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.doc.source.value_at(path), message))

    # -- fields -------------------------------------------------------------------------

    def resolve(self, spec: dict[str, Any], path: JsonPath) -> tuple[dict[str, Any], JsonPath]:
        """Follow `$ref`s to a definition; merge the referring description over it."""
        seen: list[str] = []
        while "$ref" in spec:
            ref = spec["$ref"]
            if ref in seen:
                self.value_problem((*path, "$ref"), f"$ref cycle: {' -> '.join([*seen, ref])}")
                return {"type": "string"}, path
            if ref not in self.definitions:
                hint = did_you_mean(ref, self.definitions)
                if not hint:
                    hint = f" (known: {', '.join(sorted(self.definitions)) or 'none defined'})"
                self.value_problem((*path, "$ref"), f"$ref '{ref}' names no definition{hint}")
                return {"type": "string"}, path
            seen.append(ref)
            extra = {k: v for k, v in spec.items() if k != "$ref"}
            if set(extra) - {"description"}:
                self.problem(path, "a $ref field may only add a description")
            spec = {**self.definitions[ref], **extra}
            path = ("definitions", ref)
        return spec, path

    def field(
        self, name: str, spec: dict[str, Any], path: JsonPath, required: bool, depth: int = 0
    ) -> FieldSpec:
        if depth > _MAX_DEPTH:
            self.problem(path, f"fields nested deeper than {_MAX_DEPTH} levels")
            return FieldSpec(name, "string", required)
        if "$ref" in spec and "type" in spec:
            self.problem(path, "a field has either $ref or type, not both")
        if "$ref" not in spec and "type" not in spec:
            self.problem(path, "a field needs a type (or a $ref to a definition)")
            return FieldSpec(name, "string", required)
        spec, spec_path = self.resolve(spec, path)
        if "type" not in spec:  # a $ref to a definition that has no type
            self.problem(spec_path, "a field needs a type (or a $ref to a definition)")
            return FieldSpec(name, "string", required)
        kind = spec["type"]
        for key in sorted(set(spec) & _ALL_CONSTRAINTS - _CONSTRAINTS_BY_TYPE[kind]):
            self.problem((*spec_path, key), f"'{key}' does not apply to a field of type {kind}")
        for value in spec.get("enum", []):
            wanted = str if kind == "string" else int
            if not isinstance(value, wanted) or isinstance(value, bool):
                self.value_problem((*spec_path, "enum"), f"enum value {value!r} is not a {kind}")
        self._check_range(spec, spec_path, "minimum", "maximum")
        self._check_range(spec, spec_path, "minLength", "maxLength")
        self._check_range(spec, spec_path, "minItems", "maxItems")
        pattern = spec.get("pattern")
        if pattern is not None:
            why = pattern_problem(pattern)
            if why:
                self.value_problem((*spec_path, "pattern"), why)
                # Keep it out of the model: the meaning checks validate deadline payloads.
                pattern = None
        items = None
        if kind == "array":
            if "items" not in spec:
                self.problem(spec_path, "an array field needs 'items'")
            else:
                items = self.field("item", spec["items"], (*spec_path, "items"), True, depth + 1)
        properties: tuple[FieldSpec, ...] = ()
        if kind == "object":
            if "properties" not in spec:
                self.problem(spec_path, "an object field needs 'properties'")
            else:
                properties = self.object_fields(spec, spec_path, depth + 1)
        return FieldSpec(
            name=name,
            type=kind,
            required=required,
            description=str(spec.get("description", "")),
            enum=tuple(spec.get("enum", ())),
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
            min_length=spec.get("minLength"),
            max_length=spec.get("maxLength"),
            pattern=pattern,
            min_items=spec.get("minItems"),
            max_items=spec.get("maxItems"),
            items=items,
            properties=properties,
        )

    def seconds(self, value: float, path: JsonPath) -> float:
        """`value` as seconds; a problem unless it is finite."""
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond the largest float
            seconds = math.inf
        if not math.isfinite(seconds):
            where = ".".join(str(p) for p in path)
            self.value_problem(path, f"{where}: expected a finite number of seconds")
        return seconds

    def _check_range(self, spec: dict[str, Any], path: JsonPath, low: str, high: str) -> None:
        if low in spec and high in spec and spec[low] > spec[high]:
            self.value_problem((*path, low), f"{low} {spec[low]} is above {high} {spec[high]}")

    def object_fields(
        self, body: dict[str, Any], path: JsonPath, depth: int = 0
    ) -> tuple[FieldSpec, ...]:
        props: dict[str, Any] = body.get("properties", {})
        required = body.get("required", [])
        for i, name in enumerate(required):
            if name not in props:
                self.value_problem(
                    (*path, "required", i),
                    f"required field '{name}' is not in properties{did_you_mean(name, props)}",
                )
        fields = []
        for name, spec in props.items():
            fpath = (*path, "properties", name)
            problem = field_problem(name)
            if problem:
                self.problem(fpath, problem)
            fields.append(self.field(name, spec, fpath, name in required, depth))
        return tuple(fields)

    # -- the rest -----------------------------------------------------------------------

    def names(self, section: str, what: str) -> None:
        for name in self.data.get(section, {}):
            problem = pascal_problem(name, what)
            if problem:
                self.problem((section, name), problem)

    def build(self) -> Registry:
        d = self.data
        self.names("events", "event")
        self.names("services", "service")
        self.names("definitions", "definition")
        saga = d["saga"]
        for key in ("name", "key"):
            problem = snake_problem(saga[key], f"saga {key}")
            if problem:
                self.value_problem(("saga", key), problem)
        topics = {}
        for role in ("events", "dead_letter"):
            t = d["topics"][role]
            problem = topic_problem(t["name"])
            if problem:
                self.value_problem(("topics", role, "name"), problem)
            topics[role] = Topic(t["name"], t.get("partitions", 1))
        if topics["events"].name == topics["dead_letter"].name:
            self.value_problem(
                ("topics", "dead_letter", "name"),
                "the dead-letter topic must differ from the events topic",
            )
        events = tuple(
            Event(
                name=name,
                kind=e["kind"],
                producer=e["producer"],
                stage=tuple(sorted(e["stage"].items())),
                description=e.get("description", ""),
                fields=self.object_fields(e["payload"], ("events", name, "payload")),
                version=e.get("version", 1),
                upcasts=tuple(
                    Upcast(
                        u["from"],
                        tuple(u.get("rename", {}).items()),
                        tuple((f, tuple(m.items())) for f, m in u.get("values", {}).items()),
                        tuple(u.get("default", {}).items()),
                    )
                    for u in sorted(e.get("upcast", []), key=lambda u: int(u["from"]))
                ),
                undoes=tuple(e.get("undoes", ())),
            )
            for name, e in d["events"].items()
        )
        services = tuple(
            Service(
                name=name,
                description=s.get("description", ""),
                initiates=tuple(s.get("initiates", ())),
                reactions=tuple(
                    Reaction(
                        ev, tuple(r["emits"]), r.get("description", ""), bool(r.get("defer", False))
                    )
                    for ev, r in s.get("reacts", {}).items()
                ),
            )
            for name, s in d["services"].items()
        )
        sm = d["state_machine"]
        for name in sm["states"]:
            problem = snake_problem(name, "state")
            if problem:
                self.problem(("state_machine", "states", name), problem)
        machine = StateMachine(
            initial=sm["initial"],
            states=tuple(
                State(n, s.get("description", ""), bool(s.get("terminal", False)), s.get("outcome"))
                for n, s in sm["states"].items()
            ),
            transitions=tuple(
                Transition(
                    t["on"],
                    (t["from"],) if isinstance(t["from"], str) else tuple(t["from"]),
                    t["to"],
                )
                for t in sm["transitions"]
            ),
            deadlines=tuple(
                Deadline(
                    x["state"],
                    self.seconds(x["within_s"], ("state_machine", "deadlines", i, "within_s")),
                    x["emit"],
                    tuple(sorted(x.get("payload", {}).items())),
                    x.get("description", ""),
                    x.get("name", ""),
                )
                for i, x in enumerate(sm.get("deadlines", []))
            ),
        )
        return Registry(
            path=self.doc.source.path,
            name=saga["name"],
            title=saga.get("title", saga["name"]),
            key=saga["key"],
            events_topic=topics["events"],
            dead_letter_topic=topics["dead_letter"],
            services=services,
            events=events,
            state_machine=machine,
            signed_events=bool(saga.get("signed_events", False)),
            projections=bool(saga.get("projections", True)),
        )


def build_registry(doc: Document) -> tuple[Registry, list[Problem]]:
    """The typed registry of a structurally valid `doc`, and the problems met building it."""
    builder = _Builder(doc)
    registry = builder.build()
    return registry, builder.problems
