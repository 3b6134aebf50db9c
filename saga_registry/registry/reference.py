"""The registry reference, `docs/registry.md`, rendered from the JSON Schema.

Every key's path, type, whether it is required, its description and an example come from
`registry.schema.json`; the rules the validator enforces beyond the schema are kept here as
data (`RULES`), next to a complete example registry (`MINIMAL_EXAMPLE`) that the tests load.
`scripts/registry_reference.py` writes the file; the tests check it is up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from saga_registry.registry.structure import registry_schema

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Reading the file",
        (
            "The file is UTF-8 text holding one YAML document.",
            "A key appears once in its mapping; keys are plain names, not collections.",
            "Keys are read as written, so `on:` is the key `on`. A value is read as YAML 1.1 "
            "reads it: an unquoted `on`, `off`, `yes` or `no` is a boolean, so quote a name "
            'spelt like that ("on").',
            "No YAML tags (`!!python/...`, `!custom`): a registry is plain data.",
            "At most 500,000 values (aliases included) nested at most 100 levels deep.",
            "Every key is one listed above, with a value of its type; an unknown key is "
            "refused, naming the closest known one.",
        ),
    ),
    (
        "Names",
        (
            "Service, event and definition names are PascalCase: an uppercase letter, then "
            "letters and digits, at most 64; not `Event`, `EventBase`, `EventKind`, "
            "`EVENT_TYPES`, `Reaction` nor a Python keyword.",
            "The saga name, the saga key and state names are snake_case: a lowercase letter, "
            "then lowercase letters, digits and underscores, at most 64; not a Python keyword.",
            "Field names are snake_case too, and not a name the generated event classes use "
            "(`kind`, `producer`, `stage`, `event_type`, `payload_schema`, `validate`, "
            "`json`, `dict`, `copy`, `schema`, ... or anything starting with `model_`).",
            "A name is used once across services, events and definitions.",
            "Names that differ only in case are refused: services (they would share a "
            "database, since `{service}` in a database URL becomes the lower-cased name), "
            "events, definitions, states, and the fields of one object.",
            "Two services may not share a module name (`OrderHistory` and `ORDERHistory` are "
            "both `order_history`), nor two events a handler method (`on_order_history`).",
            "Topic names use letters, digits, `.`, `_` and `-` (at most 249, not `.` or `..`); "
            "the dead-letter topic differs from the events topic.",
            "A reference to an unknown event, service, state or definition is refused, "
            "naming the closest known one.",
        ),
    ),
    (
        "Payload fields",
        (
            "A field has a `type` or a `$ref`, not both; next to a `$ref` only a "
            "`description` may be given; `$ref`s may not form a cycle.",
            "A constraint applies only to its types: `enum`, `minLength`, `maxLength` and "
            "`pattern` to strings; `enum`, `minimum` and `maximum` to integers; `minimum` and "
            "`maximum` to numbers; `items`, `minItems` and `maxItems` to arrays; "
            "`properties` and `required` to objects.",
            "`enum` values have the field's type; a minimum is not above its maximum.",
            "An array field has `items`; an object field has `properties`; fields nest at "
            "most 8 levels deep; every name in `required` is in `properties`.",
            "A `pattern` is a regular expression the Rust `regex` engine accepts (pydantic "
            "matches patterns with it in the generated code): no look-around, no "
            "back-references. Matching it takes time linear in the value.",
        ),
    ),
    (
        "The saga key",
        (
            "Every event's payload has the saga key as a required field of type string or integer.",
            "The saga key has one type in every event (all strings or all integers).",
        ),
    ),
    (
        "Services and events",
        (
            "An event's producer is a service of the registry.",
            "A service initiates and emits only events it produces; an event is not listed "
            "twice in one reaction's `emits`.",
            "A service reacts only to events that are produced: initiated, emitted by a "
            "reaction, or emitted by a deadline.",
            "Every event is emitted or consumed.",
            "An event no service reacts to ends the saga: its transitions lead to terminal "
            "states only.",
        ),
    ),
    (
        "The state machine",
        (
            "The initial state is a state, and not terminal; at least one state is terminal.",
            "A transition's event and states exist; no transition leaves a terminal state; "
            "one state has at most one transition per event.",
            "Every event triggers at least one transition.",
            "Every state is reachable from the initial state, and from every reachable state "
            "a terminal state can be reached.",
            "Every non-terminal state with transitions out is left by an event that is "
            "emitted while the saga is in it: by a reaction to an event that enters it, by "
            "a deadline on it, or (for the initial state) by an initiated event.",
            "From the state a failure event leads to, some way to a terminal state passes "
            "at least one compensation event.",
        ),
    ),
    (
        "Deadlines",
        (
            "A deadline guards a state that exists and is not terminal; its `within_s` is a "
            "finite number of seconds above 0.",
            "Its event exists and has a transition out of the guarded state.",
            "Its payload leaves out the saga key, and fits the event's payload schema once "
            "the engine adds it.",
            "A reaction with `defer: true` is guarded: every state its event leads to has a "
            "deadline, and every deadline there emits an event of the deferring service (the "
            "late answer and the deadline take one timer in that service's database, so only "
            "one of them counts).",
        ),
    ),
)
"""What the validator checks beyond the shape the schema gives, by topic. The graph rules
(reachability, choreography, compensation) are checked once every reference resolves."""

MINIMAL_EXAMPLE = """\
version: 1

saga:
  name: transfer
  title: Money transfer
  key: transfer_id            # every payload carries it; its value identifies one saga

topics:
  events: {name: transfer.events, partitions: 3}
  dead_letter: {name: transfer.events.dlq}

services:
  Bank:
    description: Takes transfer requests and debits the payer.
    initiates: [TransferRequested]
    reacts:
      CreditFailed:
        emits: [DebitRefunded]
  Ledger:
    description: Credits the payee.
    reacts:
      TransferRequested:
        emits: [Credited, CreditFailed]
        defer: true           # may answer later: the deadline on `requested` guards it

definitions:
  Id: {type: string, minLength: 1, maxLength: 64}
  Money: {type: integer, minimum: 1, description: An amount in cents.}

events:
  TransferRequested:
    kind: domain
    producer: Bank
    stage: {en: The payer asks for a transfer}
    payload:
      required: [transfer_id, amount]
      properties:
        transfer_id: {$ref: Id}
        amount: {$ref: Money}
  Credited:
    kind: domain
    producer: Ledger
    stage: {en: The payee is credited}
    payload:
      required: [transfer_id]
      properties:
        transfer_id: {$ref: Id}
  CreditFailed:
    kind: failure
    producer: Ledger
    stage: {en: The payee could not be credited}
    payload:
      required: [transfer_id, reason]
      properties:
        transfer_id: {$ref: Id}
        reason: {type: string, enum: [rejected, timeout]}
  DebitRefunded:
    kind: compensation
    producer: Bank
    stage: {en: The payer gets the money back}
    payload:
      required: [transfer_id]
      properties:
        transfer_id: {$ref: Id}

state_machine:
  initial: new
  states:
    new: {description: No event seen yet.}
    requested: {description: Debited; waiting for the credit.}
    failed: {description: The credit failed; the debit is to be refunded.}
    done: {terminal: true, outcome: success}
    refunded: {terminal: true, outcome: failure}
  transitions:
    - {on: TransferRequested, from: new, to: requested}
    - {on: Credited, from: requested, to: done}
    - {on: CreditFailed, from: requested, to: failed}
    - {on: DebitRefunded, from: failed, to: refunded}
  deadlines:
    - state: requested
      within_s: 30
      emit: CreditFailed
      payload: {reason: timeout}   # the engine adds transfer_id
"""
"""A complete registry that validates: two services, a failure with its compensation, a
deferred reaction and the deadline guarding it."""

_PLACEHOLDERS = {
    "services": "<Service>",
    "events": "<Event>",
    "definitions": "<Definition>",
    "states": "<state>",
    "reacts": "<Event>",
    "properties": "<field>",
}
"""How a name chosen by the user is written in a key's path, by the mapping holding it."""

_FIELD = "#/$defs/field"


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    type: str
    required: bool | None
    """None for an entry of a mapping of names chosen by the user."""
    description: str
    example: Any
    has_example: bool


class _Walker:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.entries: list[_Entry] = []

    def target(self, node: dict[str, Any]) -> dict[str, Any]:
        """`node` with its `$ref` followed (the referring keys win)."""
        ref = node.get("$ref")
        if ref is None:
            return node
        found: dict[str, Any] = self.schema["$defs"][ref.rsplit("/", 1)[-1]]
        return {**self.target(found), **{k: v for k, v in node.items() if k != "$ref"}}

    def type_of(self, node: dict[str, Any]) -> str:
        if node.get("$ref") == _FIELD:
            return "field"
        node = self.target(node)
        if "const" in node:
            return f"the constant `{node['const']}`"
        if "enum" in node:
            return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
        if "oneOf" in node:
            return " or ".join(self.type_of(n) for n in node["oneOf"])
        kind = node.get("type")
        if kind == "array":
            items = node.get("items", {})
            ref = str(items.get("$ref", ""))
            if ref and ref != _FIELD and self.target(items).get("type") == "object":
                return f"list of {ref.rsplit('/', 1)[-1]}s"
            return f"list of {self.type_of(items)}"
        if kind == "object":
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                # Name the definition ("service", "event") rather than "mapping".
                ref = str(extra.get("$ref", ""))
                what = ref.rsplit("/", 1)[-1] if ref else self.type_of(extra)
                return f"mapping of names to {what}s"
            if "patternProperties" in node:
                return "mapping of language codes to string"
            return "mapping"
        if isinstance(kind, list):
            return " or ".join(kind)
        return str(kind or "any")

    def walk(self, node: dict[str, Any], path: str) -> None:
        """Add an entry for each key under `node` (already an entry itself)."""
        body = self.target(node)
        required = set(body.get("required", ()))
        for key, child in body.get("properties", {}).items():
            self.add(child, f"{path}.{key}" if path else key, key in required)
        extra = body.get("additionalProperties")
        if isinstance(extra, dict):
            last = path.rsplit(".", 1)[-1]
            self.add(extra, f"{path}.{_PLACEHOLDERS.get(last, '<name>')}", None)
        for child in body.get("patternProperties", {}).values():
            self.add(child, f"{path}.<lang>", None)
        items = body.get("items")
        if isinstance(items, dict) and items.get("$ref") != _FIELD:
            self.walk(items, f"{path}[]")

    def add(self, node: dict[str, Any], path: str, required: bool | None) -> None:
        # A property's own description wins over its definition's.
        full = self.target(node)
        self.entries.append(
            _Entry(
                path=path,
                type=self.type_of(node),
                required=required,
                description=str(full.get("description", "")),
                example=full.get("examples", [None])[0],
                has_example=bool(full.get("examples")),
            )
        )
        if node.get("$ref") != _FIELD:
            self.walk(node, path)


def _inline(value: Any) -> str:
    """`value` as one line of YAML (flow style), as a registry would spell it."""
    text = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10_000
    )
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _entry_markdown(entry: _Entry, level: str = "###") -> list[str]:
    need = {True: ", required", False: ", optional", None: ""}[entry.required]
    lines = [f"{level} `{entry.path}`", "", f"*{entry.type}{need}.* {entry.description}".rstrip()]
    if entry.has_example:
        lines += ["", f"Example: `{_inline(entry.example)}`"]
    return [*lines, ""]


_INTRO = """\
<!-- Generated by scripts/registry_reference.py from saga_registry/registry/registry.schema.json
     and saga_registry/registry/reference.py. DO NOT EDIT: edit those and run the script. -->
# The registry format

A registry is one YAML file describing one saga: the services that take part, the events
they exchange, and the state machine every service keeps for each saga. `saga validate
PATH` checks it and prints every problem as `path:line:col: message`; `saga codegen`
turns it into typed events, one abstract base per service and diagrams.

This page lists every key (its path, type, whether it is required, what it means and an
example), then the rules the validator enforces beyond the shape of the file, and ends
with a complete example. In a path, `<Service>`, `<Event>`, `<Definition>`, `<state>` and
`<field>` stand for a name you choose, and `[]` for each item of a list.
"""

_FIELDS_INTRO = """\
## Payload fields

An event's `payload.properties`, a definition, an array's `items` and an object field's
`properties` each hold fields, written in a subset of JSON Schema. `<field>` below is any
of them.
"""


def render_reference() -> str:
    """The Markdown text of `docs/registry.md`."""
    schema = registry_schema()
    walker = _Walker(schema)
    walker.walk(schema, "")
    out = [_INTRO]
    for entry in walker.entries:
        top = "." not in entry.path and "[" not in entry.path
        out += _entry_markdown(entry, "##" if top else "###")
    fields = _Walker(schema)
    fields.walk({"$ref": "#/$defs/field"}, "<field>")
    out += [_FIELDS_INTRO]
    for entry in fields.entries:
        out += _entry_markdown(entry)
    out += ["## Rules the validator enforces", ""]
    for topic, rules in RULES:
        out += [f"### {topic}", "", *(f"- {rule}" for rule in rules), ""]
    out += [
        "## A complete example",
        "",
        "Two services, a failure with its compensation, and a deferred reaction guarded by "
        "a deadline. It validates as it stands.",
        "",
        "```yaml",
        MINIMAL_EXAMPLE.rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(out)
