"""The event envelope: CloudEvents 1.0 on Kafka, as the CloudEvents Kafka protocol
binding maps it.

The engine writes the binary content mode: attributes travel as `ce_*` headers, the
payload as the JSON record value (`content-type: application/json`), and the saga id as
the record key (also `ce_partitionkey`, the CloudEvents partitioning extension). Two
extensions carry the chain of cause: `ce_correlationid` (the saga's first event) and
`ce_causationid` (the event this one reacted to). The Distributed Tracing extension
carries the OpenTelemetry trace context, `ce_traceparent` and `ce_tracestate` (W3C Trace
Context), optional: an event without them is valid and starts no trace of its own.

It reads the structured content mode too: `content-type: application/cloudevents+json`
and the whole event as one JSON object in the value (`specversion`, `id`, `source`,
`type`, `time`, `datacontenttype`, `partitionkey`, `correlationid`, `causationid`,
`traceparent`, `tracestate`, and `data` as a JSON value or `data_base64`), and writes it
for whoever asks (`to_structured_record`). Any Kafka client in any language can produce a
valid record either way.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from saga_registry.engine.bus import Record
from saga_registry.engine.errors import BadEnvelope

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
"""The media type of the structured mode's one event format read: JSON."""
_FORMAT_PREFIX = "application/cloudevents"
_BATCH_PREFIX = "application/cloudevents-batch"
_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type")
_REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
_TEXT_ATTRIBUTES = (
    *_REQUIRED_ATTRIBUTES,
    "time",
    "datacontenttype",
    "partitionkey",
    "correlationid",
    "causationid",
    "traceparent",
    "tracestate",
    "dataschema",
)
"""The attributes read from a structured event: each must be a JSON string if present."""
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One CloudEvent of a saga, payload still encoded."""

    id: str
    type: str
    source: str
    saga_id: str
    data: bytes
    time: str
    correlation_id: str
    causation_id: str | None = None
    traceparent: str = ""
    """The trace context of the span that emitted this event (W3C `traceparent`); empty:
    none. Not covered by a signature: it changes per hop (`engine.signing`)."""
    tracestate: str = ""
    """The vendor part of the trace context (W3C `tracestate`); empty: none."""
    dataschema: str = ""
    """The schema of `data` (CloudEvents `dataschema`): the engine writes the event's
    versioned URN (`registry.versions`); empty: none, which reads as version 1."""

    @classmethod
    def new(
        cls,
        *,
        type: str,
        source: str,
        saga_id: str,
        data: bytes,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        traceparent: str = "",
        tracestate: str = "",
        dataschema: str = "",
    ) -> Envelope:
        """A fresh envelope. `cause` is the event being reacted to, if any: the new event
        takes its correlation id and names it as its causation.

        Without a `cause` in hand (a deferred answer, a deadline event), `correlation_id`
        and `causation_id` give the chain explicitly: the saga's correlation id and the
        event that led to this one. Giving both a `cause` and either of them is an error.
        Without any, the event starts a chain of its own: its id is its correlation id.

        `traceparent` and `tracestate` are the trace context of the span emitting it;
        without them an event caused by `cause` carries the cause's on, so that a trace
        passes through a service that does not trace. `dataschema` names the data's
        schema and version (`registry.versions.dataschema`); a service's records get their
        event's when it sends them."""
        if cause is not None and (correlation_id is not None or causation_id is not None):
            raise ValueError("give either cause or correlation_id/causation_id, not both")
        event_id = str(uuid.uuid4())
        if cause is not None:
            correlation_id, causation_id = cause.correlation_id, cause.id
            if not traceparent:
                traceparent, tracestate = cause.traceparent, cause.tracestate
        return cls(
            id=event_id,
            type=type,
            source=source,
            saga_id=saga_id,
            data=data,
            time=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            correlation_id=correlation_id or event_id,
            causation_id=causation_id,
            traceparent=traceparent,
            tracestate=tracestate if traceparent else "",
            dataschema=dataschema,
        )

    def to_record(self, topic: str) -> Record:
        """This envelope as a Kafka-binary-mode record on `topic`."""
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("content-type", CONTENT_TYPE.encode()),
            ("ce_partitionkey", self.saga_id.encode()),
            ("ce_correlationid", self.correlation_id.encode()),
        ]
        if self.time:  # optional in CloudEvents; an empty one would not be RFC 3339
            headers.insert(4, ("ce_time", self.time.encode()))
        if self.causation_id:
            headers.append(("ce_causationid", self.causation_id.encode()))
        if self.traceparent:
            headers.append(("ce_traceparent", self.traceparent.encode()))
            if self.tracestate:
                headers.append(("ce_tracestate", self.tracestate.encode()))
        if self.dataschema:
            headers.append(("ce_dataschema", self.dataschema.encode()))
        return Record(topic, self.saga_id.encode(), self.data, tuple(headers))

    def to_structured_record(self, topic: str) -> Record:
        """This envelope as a Kafka-structured-mode record on `topic`: the whole event as
        one JSON object in the value, its data as a JSON value (`data_base64` if the data
        is not JSON). `from_record` reads it as this envelope."""
        event: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "datacontenttype": CONTENT_TYPE,
            "partitionkey": self.saga_id,
            "correlationid": self.correlation_id,
        }
        optional = {
            "time": self.time,
            "causationid": self.causation_id,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
            "dataschema": self.dataschema,
        }
        event.update((name, value) for name, value in optional.items() if value)
        if self.data:
            try:
                event["data"] = json.loads(self.data)
            except ValueError:  # not JSON text: carried as bytes
                event["data_base64"] = base64.b64encode(self.data).decode()
        value = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = (("content-type", STRUCTURED_CONTENT_TYPE.encode()),)
        return Record(topic, self.saga_id.encode(), value, headers)

    @classmethod
    def from_record(cls, record: Record) -> Envelope:
        """Read a record in either content mode of the CloudEvents Kafka binding; raises
        `BadEnvelope` naming, in one line, what is wrong.

        A `content-type` header whose media type starts with `application/cloudevents`
        marks the structured mode (the binding's rule): the value is the whole event in
        the JSON event format. Anything else is the binary mode. Both give the same
        envelope for the same event. Media types are compared without case and without
        parameters; `time`, when present, must be an RFC 3339 timestamp."""
        headers = _headers(record)
        media = media_type(headers.get("content-type", ""))
        if media.startswith(_FORMAT_PREFIX):
            return cls._from_structured(record, media)
        return cls._from_binary(record, headers)

    @classmethod
    def _from_binary(cls, record: Record, headers: dict[str, str]) -> Envelope:
        missing = [h for h in _REQUIRED if not headers.get(h)]
        if missing:
            raise BadEnvelope(f"missing CloudEvents header(s): {', '.join(missing)}")
        if headers["ce_specversion"] != SPEC_VERSION:
            raise BadEnvelope(f"unsupported ce_specversion {_shown(headers['ce_specversion'])}")
        # The binding maps datacontenttype to `content-type`; a `ce_datacontenttype` header
        # some clients add as well must say JSON too.
        for name in ("content-type", "ce_datacontenttype"):
            if name in headers and not _is_json(media_type(headers[name])):
                raise BadEnvelope(
                    f"unsupported {name} {_shown(headers[name])}: the data must be JSON"
                )
        if "ce_time" in headers:
            _check_time(headers["ce_time"], "ce_time")
        return cls(
            id=headers["ce_id"],
            type=headers["ce_type"],
            source=headers["ce_source"],
            saga_id=_saga_id(record, headers.get("ce_partitionkey", ""), "ce_partitionkey"),
            data=record.value,
            time=headers.get("ce_time", ""),
            correlation_id=headers.get("ce_correlationid") or headers["ce_id"],
            causation_id=headers.get("ce_causationid") or None,
            traceparent=headers.get("ce_traceparent", ""),
            tracestate=headers.get("ce_tracestate", "") if headers.get("ce_traceparent") else "",
            dataschema=headers.get("ce_dataschema", ""),
        )

    @classmethod
    def _from_structured(cls, record: Record, media: str) -> Envelope:
        if media.startswith(_BATCH_PREFIX):
            raise BadEnvelope(
                f"{media}: the batched content mode is not supported (the Kafka binding has none)"
            )
        if media != STRUCTURED_CONTENT_TYPE:
            raise BadEnvelope(
                f"unsupported event format {_shown(media)}: only {STRUCTURED_CONTENT_TYPE} is read"
            )
        try:
            event = json.loads(record.value)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise BadEnvelope(f"structured CloudEvent is not JSON: {_line(exc)}") from None
        if not isinstance(event, dict):
            raise BadEnvelope("structured CloudEvent is not a JSON object")
        missing = [a for a in _REQUIRED_ATTRIBUTES if event.get(a) in (None, "")]
        if missing:
            raise BadEnvelope(f"missing CloudEvents attribute(s): {', '.join(missing)}")
        text = {a: event[a] for a in _TEXT_ATTRIBUTES if event.get(a) is not None}
        for name, value in text.items():
            if not isinstance(value, str):
                raise BadEnvelope(f"attribute {name} is not a string: {_shown(value)}")
        if text["specversion"] != SPEC_VERSION:
            raise BadEnvelope(f"unsupported specversion {_shown(text['specversion'])}")
        if "time" in text:
            _check_time(text["time"], "time")
        content_type = text.get("datacontenttype", CONTENT_TYPE)
        if not _is_json(media_type(content_type)):
            raise BadEnvelope(
                f"unsupported datacontenttype {_shown(content_type)}: the data must be JSON"
            )
        return cls(
            id=text["id"],
            type=text["type"],
            source=text["source"],
            saga_id=_saga_id(record, text.get("partitionkey", ""), "partitionkey attribute"),
            data=_structured_data(event),
            time=text.get("time", ""),
            correlation_id=text.get("correlationid") or text["id"],
            causation_id=text.get("causationid") or None,
            traceparent=text.get("traceparent", ""),
            tracestate=text.get("tracestate", "") if text.get("traceparent") else "",
            dataschema=text.get("dataschema", ""),
        )


def attributes(record: Record) -> dict[str, str]:
    """The CloudEvents attributes `record` carries (`type`, `id`, `source`, ...), in either
    mode, as far as they can be read; never raises (for listing records that may be bad)."""
    headers = {
        name: value.decode("utf-8", "replace")
        for name, value in reversed(record.headers)
        if name.startswith("ce_") or name == "content-type"
    }
    if not media_type(headers.get("content-type", "")).startswith("application/cloudevents"):
        return {name[3:]: value for name, value in headers.items() if name.startswith("ce_")}
    try:
        event = json.loads(record.value)
    except ValueError:
        return {}
    if not isinstance(event, dict):
        return {}
    return {k: v for k, v in event.items() if isinstance(k, str) and isinstance(v, str)}


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value: lowercase, parameters dropped
    (`Application/JSON; charset=utf-8` is `application/json`)."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    # The JSON event format's rule: application/json, or any */*+json.
    return media == CONTENT_TYPE or ("/" in media and media.endswith("+json"))


def _headers(record: Record) -> dict[str, str]:
    """The record's CloudEvents headers (`ce_*`, `content-type`) as text, first of each
    name; other headers are not ours to read and may hold any bytes."""
    headers: dict[str, str] = {}
    for name, value in record.headers:
        if name in headers or not (name.startswith("ce_") or name == "content-type"):
            continue
        try:
            headers[name] = value.decode("utf-8")
        except (UnicodeDecodeError, AttributeError) as exc:
            raise BadEnvelope(f"header {name} is not UTF-8 text: {_line(exc)}") from None
    return headers


def _saga_id(record: Record, partition_key: str, where: str) -> str:
    """The record key, else the partitionkey extension (the binding maps one to the other)."""
    try:
        key = record.key.decode("utf-8") if record.key else ""
    except UnicodeDecodeError:
        raise BadEnvelope("record key is not UTF-8 text") from None
    saga_id = key or partition_key
    if not saga_id:
        raise BadEnvelope(f"no saga id: the record has no key and no {where}")
    return saga_id


def _structured_data(event: dict[str, Any]) -> bytes:
    """The event's data as the bytes the binary mode would carry: `data` (a JSON value)
    encoded compactly, or `data_base64` decoded; empty if it has neither."""
    if "data" in event and "data_base64" in event:
        raise BadEnvelope("structured CloudEvent has both data and data_base64")
    if "data_base64" in event:
        encoded = event["data_base64"]
        try:
            if not isinstance(encoded, str):
                raise ValueError("not a string")
            return base64.b64decode(encoded, validate=True)
        except ValueError:  # binascii.Error is one
            raise BadEnvelope(f"data_base64 is not base64: {_shown(encoded)}") from None
    if "data" not in event:
        return b""
    return json.dumps(event["data"], separators=(",", ":"), ensure_ascii=False).encode()


def _check_time(value: str, name: str) -> None:
    """Raise `BadEnvelope` unless `value` is an RFC 3339 date-time (offset required, `T`
    in either case, any fraction of a second, a leap second allowed)."""
    match = _RFC3339.fullmatch(value)
    valid = False
    if match:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        offset = match.group(8).upper()
        try:
            datetime(year, month, day, hour, minute, min(second, 59))
        except ValueError:
            pass
        else:
            valid = second <= 60 and (
                offset == "Z" or (int(offset[1:3]) < 24 and int(offset[4:6]) < 60)
            )
    if not valid:
        raise BadEnvelope(f"{name} {_shown(value)} is not an RFC 3339 timestamp")


def _shown(value: object) -> str:
    """`value` quoted for a one-line message, cut short if long."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
