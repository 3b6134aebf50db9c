"""The registry as an AsyncAPI 3.0 document: the contract any Kafka client can produce to
and consume from, checked by AsyncAPI's own parser (scripts/asyncapi-validate).

The document has one Kafka server (its host a variable), two channels (the events topic
and the dead-letter topic, addressed by their topic names), one message per event (its
payload the current version's JSON Schema inlined, its headers the CloudEvents Kafka
binary-mode headers the engine writes and reads, its record key the saga key), and per
service a `send` operation for each event it produces and a `receive` operation for each
event it reacts to (`x-saga-emits` naming the events the reaction may answer with).

`info.version` is the first 16 hex digits of the SHA-256 of the document itself, without
its version and header comment: equal versions mean the same contract, and any change a
producer or consumer could see (a field, a header, a topic, an operation) changes it,
while a comment in the registry does not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from saga_registry.codegen.json_schemas import dataschema, path_of, versions_of
from saga_registry.registry import versions
from saga_registry.registry.model import Event, Registry, object_schema

ASYNCAPI = "3.0.0"
KAFKA_BINDING = "0.5.0"
EVENTS, DEAD_LETTERS = "events", "deadLetters"
CORRELATION = {"$ref": "#/components/correlationIds/saga"}
_TRACEPARENT = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")
"""What the engine refuses an event without (engine.envelope's binary mode)."""


def document(registry: Registry, head: str) -> str:
    """The AsyncAPI document of `registry` as YAML, `head` its first comment line."""
    doc = _document(registry)
    contract = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
    doc["info"]["version"] = hashlib.sha256(contract).hexdigest()[:16]
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, indent=2)
    return f"# {head}\n{body}"


def _document(registry: Registry) -> dict[str, Any]:
    key = f"`{registry.key}`"
    description = (
        f"The events of the `{registry.name}` saga, a choreography of "
        f"{len(registry.services)} services over Kafka. Every event is a CloudEvent in the "
        "Kafka binding's binary content mode: attributes in `ce_*` headers, the payload as "
        f"JSON in the record value, and the saga key {key} as the record key, so that the "
        "events of one saga stay in order on one partition. An event of version N > 1 "
        "names it in `ce_dataschema`; without it an event is read as version 1. The JSON "
        "Schema of every version of every payload is published beside this document, in "
        "docs/schemas/."
    )
    return {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": registry.title,
            "version": "",  # the contract's digest, set by `document`
            "description": description,
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster the services run on (`saga run`'s bus).",
                "variables": {
                    "bootstrap": {
                        "default": "localhost:9092",
                        "description": "host:port of a bootstrap broker.",
                    }
                },
            }
        },
        "channels": {
            EVENTS: _events_channel(registry),
            DEAD_LETTERS: _dead_letter_channel(registry),
        },
        "operations": _operations(registry),
        "components": {
            "messages": {
                message_id(e, v): _message(registry, e, v)
                for e in registry.events
                for v in versions_of(e)
            },
            "correlationIds": {
                "saga": {
                    "description": "The id of the saga's first event, carried by every "
                    "event of the saga (CloudEvents extension `correlationid`).",
                    "location": "$message.header#/ce_correlationid",
                }
            },
        },
    }


def _events_channel(registry: Registry) -> dict[str, Any]:
    topic = registry.events_topic
    return {
        "address": topic.name,
        "title": "Saga events",
        "description": f"Every event of every `{registry.name}` saga, keyed by the saga "
        f"key `{registry.key}`.",
        "messages": {
            message_id(e, v): {"$ref": f"#/components/messages/{message_id(e, v)}"}
            for e in registry.events
            for v in versions_of(e)
        },
        "bindings": {"kafka": {"partitions": topic.partitions, "bindingVersion": KAFKA_BINDING}},
    }


def _dead_letter_channel(registry: Registry) -> dict[str, Any]:
    topic = registry.dead_letter_topic
    return {
        "address": topic.name,
        "title": "Dead letters",
        "description": "The records a service could not take in (an unreadable envelope, "
        "an invalid payload, a reaction that kept failing), each with why in `saga_*` "
        "headers; `saga dlq replay` puts them back. Replay markers (records with a "
        "`saga_replay_marker` header) share the topic.",
        # Defined here, not among the components: an event may be called DeadLetter.
        "messages": {"DeadLetter": _dead_letter(registry)},
        "bindings": {"kafka": {"partitions": topic.partitions, "bindingVersion": KAFKA_BINDING}},
    }


def message_id(event: Event, version: int) -> str:
    """The document's name for the message of `event` at `version`: the event's name for
    its current version, `<Event>.v<N>` for an older one."""
    return event.name if version == event.version else f"{event.name}.v{version}"


def _message(registry: Registry, event: Event, version: int) -> dict[str, Any]:
    urn = dataschema(registry, event, version)
    schema = path_of(event, version).as_posix()
    text = " ".join((event.description or event.stage_en).split())
    details = [text if text.endswith((".", "!", "?")) else f"{text}."]
    if version == event.version:
        details.append(
            f"A {event.kind} event, produced by {event.producer}; version {version} "
            f"(`ce_dataschema` {urn}, JSON Schema {schema})."
        )
        older = [message_id(event, v) for v in range(1, version)]
        if older:
            details.append(
                f"Its older versions ({', '.join(older)}) are still read, as this one "
                "through the registry's upcasts."
            )
    else:
        details.append(
            f"Version {version} of {event.name} (`ce_dataschema` {urn}, JSON Schema "
            f"{schema}): no longer produced by {event.producer}, still read by every "
            f"consumer as version {event.version} through the registry's upcasts."
        )
    if event.undoes:
        details.append(f"Undoes {', '.join(event.undoes)}.")
    return {
        "name": event.name,
        "title": event.name if version == event.version else f"{event.name} v{version}",
        "summary": " ".join(event.stage_en.split()),
        "description": " ".join(details),
        "contentType": "application/json",
        "correlationId": CORRELATION,
        "headers": _headers(registry, event, version),
        "payload": object_schema(versions.fields_at(event, version)),
        "bindings": {"kafka": {"key": _key(registry), "bindingVersion": KAFKA_BINDING}},
        "x-saga-version": version,
        "x-saga-dataschema": urn,
    }


def _text(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _headers(registry: Registry, event: Event, version: int) -> dict[str, Any]:
    """The Kafka headers of `event` at `version` in binary mode, as the engine writes and
    reads them."""
    urn = dataschema(registry, event, version)
    properties: dict[str, Any] = {
        "ce_specversion": _text("CloudEvents version.", const="1.0"),
        "ce_id": _text(
            "The event's id: unique per source; a repeated (source, id) is a duplicate "
            "and taken in once.",
            minLength=1,
        ),
        "ce_source": _text(
            "Who produced the event (a URI reference; the engine writes "
            f"saga/{registry.name}/<service>).",
            minLength=1,
        ),
        "ce_type": _text("The event's name.", const=event.name),
        "ce_time": _text("When the event happened (RFC 3339).", format="date-time"),
        "ce_dataschema": _text(
            "The payload's schema and version; absent means version 1. A version newer "
            "than the consumer's registry is refused (dead-lettered).",
            const=urn,
        ),
        "ce_partitionkey": _text(
            f"The saga key `{registry.key}` (the record key wins when both are present)."
        ),
        "ce_correlationid": _text(
            "The id of the saga's first event; absent means this event's own id."
        ),
        "ce_causationid": _text("The id of the event this one reacts to."),
        "ce_traceparent": _text("W3C Trace Context of the emitting span.", pattern=_TRACEPARENT),
        "ce_tracestate": _text("W3C Trace Context vendor state (with ce_traceparent only)."),
        "content-type": _text(
            "The payload's media type: application/json or another JSON media type "
            "(absent means JSON). A media type starting with application/cloudevents marks "
            "the structured content mode instead, whose value is the whole event.",
            default="application/json",
        ),
    }
    required = list(_REQUIRED_HEADERS)
    if version > 1:  # absent would read the payload as version 1
        required.append("ce_dataschema")
    if registry.signed_events:
        properties["saga_signature"] = _text(
            "KEY_ID:SIGNATURE, an HMAC-SHA256 by the producer's key (signed events)."
        )
        required.append("saga_signature")
    return {"type": "object", "required": required, "properties": properties}


def _key(registry: Registry) -> dict[str, Any]:
    """The record key: the saga key's value as UTF-8 text."""
    field = next(f for f in registry.events[0].fields if f.name == registry.key)
    description = f"The saga key `{registry.key}` of the payload, as UTF-8 text."
    if field.type == "integer":
        return _text(description + " (an integer in decimal)", pattern="^-?[0-9]+$")
    schema = field.json_schema()
    schema["description"] = description
    return schema


def _dead_letter(registry: Registry) -> dict[str, Any]:
    return {
        "name": "DeadLetter",
        "title": "Dead letter",
        "summary": "A record a service could not take in, with why.",
        "description": "The original record's key, value and headers, and the engine's "
        "`saga_*` headers saying why. The value is kept as it was (cut to its start when "
        "too large, `saga_truncated` giving its full size).",
        "headers": {
            "type": "object",
            "required": ["saga_error", "saga_error_type", "saga_service", "saga_origin"],
            "properties": {
                "saga_error": _text("Why the record was dead-lettered, one line."),
                "saga_error_type": _text("The kind of error (BadEnvelope, Rejected, ...)."),
                "saga_service": _text("The service that dead-lettered it."),
                "saga_attempts": _text("How many times it was tried.", pattern="^[0-9]+$"),
                "saga_origin": _text("topic/partition/offset of the original record."),
                "saga_truncated": _text(
                    "The original value's size in bytes, when only its start is kept.",
                    pattern="^[0-9]+$",
                ),
            },
        },
        "payload": {"description": "The original record's value, as it was."},
        "bindings": {"kafka": {"key": _key(registry), "bindingVersion": KAFKA_BINDING}},
    }


def _operations(registry: Registry) -> dict[str, Any]:
    """Per service, in registry order: what it sends, then what it receives."""
    operations: dict[str, Any] = {}
    deadlines = {d.emit: d for d in registry.state_machine.deadlines}
    for s in registry.services:
        replies: dict[str, list[str]] = {}
        for r in s.reactions:
            for emitted in r.emits:
                replies.setdefault(emitted, []).append(r.event)
        for e in registry.events:
            if e.producer != s.name:
                continue
            if e.name in s.initiates:
                why = f"{s.name} starts a saga with it."
            elif e.name in replies:
                why = f"{s.name} emits it in reply to {' or '.join(replies[e.name])}."
            elif e.name in deadlines:
                d = deadlines[e.name]
                why = (
                    f"{s.name} emits it when a saga stays in {d.state} for {d.within_s:g} s "
                    f"(deadline {d.key})."
                )
            else:
                why = f"{s.name} produces it."
            operations[f"{s.name}.send.{e.name}"] = _operation("send", EVENTS, [e.name], why)
        for r in s.reactions:
            what = " ".join(r.description.split()) or f"{s.name} reacts to {r.event}."
            # Every version of the event it reacts to: older ones are upcast on reading.
            event = registry.event(r.event)
            read = [message_id(event, v) for v in versions_of(event)]
            op = _operation("receive", EVENTS, read, what)
            op["x-saga-emits"] = list(r.emits)
            if r.defer:
                op["x-saga-defer"] = True
            operations[f"{s.name}.receive.{r.event}"] = op
        if s.reactions:
            operations[f"{s.name}.send.DeadLetter"] = _operation(
                "send",
                DEAD_LETTERS,
                ["DeadLetter"],
                f"{s.name} dead-letters what it cannot take in.",
            )
    return operations


def _operation(action: str, channel: str, messages: list[str], description: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "description": description,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
    }


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as literal blocks, and no anchors: every
    repeated value (the shared key schema) is written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)

__all__ = ["ASYNCAPI", "document"]
