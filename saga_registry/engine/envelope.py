"""The event envelope: CloudEvents 1.0 in the Kafka binary content mode.

Attributes travel as `ce_*` headers, the payload as the JSON record value, and the saga id
as the record key (also `ce_partitionkey`, the CloudEvents partitioning extension). Two
extensions carry the chain of cause: `ce_correlationid` (the saga's first event) and
`ce_causationid` (the event this one reacted to). Any Kafka client in any language can
produce a valid record by setting these headers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from saga_registry.engine.bus import Record
from saga_registry.engine.errors import BadEnvelope

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type")


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
    ) -> Envelope:
        """A fresh envelope. `cause` is the event being reacted to, if any: the new event
        takes its correlation id and names it as its causation.

        Without a `cause` in hand (a deferred answer, a deadline event), `correlation_id`
        and `causation_id` give the chain explicitly: the saga's correlation id and the
        event that led to this one. Giving both a `cause` and either of them is an error.
        Without any, the event starts a chain of its own: its id is its correlation id."""
        if cause is not None and (correlation_id is not None or causation_id is not None):
            raise ValueError("give either cause or correlation_id/causation_id, not both")
        event_id = str(uuid.uuid4())
        if cause is not None:
            correlation_id, causation_id = cause.correlation_id, cause.id
        return cls(
            id=event_id,
            type=type,
            source=source,
            saga_id=saga_id,
            data=data,
            time=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            correlation_id=correlation_id or event_id,
            causation_id=causation_id,
        )

    def to_record(self, topic: str) -> Record:
        """This envelope as a Kafka-binary-mode record on `topic`."""
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", self.time.encode()),
            ("content-type", CONTENT_TYPE.encode()),
            ("ce_partitionkey", self.saga_id.encode()),
            ("ce_correlationid", self.correlation_id.encode()),
        ]
        if self.causation_id:
            headers.append(("ce_causationid", self.causation_id.encode()))
        return Record(topic, self.saga_id.encode(), self.data, tuple(headers))

    @classmethod
    def from_record(cls, record: Record) -> Envelope:
        """Read a binary-mode record; raises `BadEnvelope` naming what is wrong."""
        headers: dict[str, str] = {}
        try:
            for name, value in record.headers:
                headers.setdefault(name, value.decode("utf-8"))
        except (UnicodeDecodeError, AttributeError) as exc:
            raise BadEnvelope(f"header is not UTF-8 text: {exc}") from None
        missing = [h for h in _REQUIRED if not headers.get(h)]
        if missing:
            raise BadEnvelope(f"missing CloudEvents header(s): {', '.join(missing)}")
        if headers["ce_specversion"] != SPEC_VERSION:
            raise BadEnvelope(f"unsupported ce_specversion {headers['ce_specversion']!r}")
        content_type = headers.get("content-type", CONTENT_TYPE)
        if content_type.split(";")[0].strip() != CONTENT_TYPE:
            raise BadEnvelope(f"unsupported content-type {content_type!r}")
        try:
            key = record.key.decode("utf-8") if record.key else ""
        except UnicodeDecodeError:
            raise BadEnvelope("record key is not UTF-8 text") from None
        saga_id = key or headers.get("ce_partitionkey", "")
        if not saga_id:
            raise BadEnvelope("no saga id: the record has no key and no ce_partitionkey")
        return cls(
            id=headers["ce_id"],
            type=headers["ce_type"],
            source=headers["ce_source"],
            saga_id=saga_id,
            data=record.value,
            time=headers.get("ce_time", ""),
            correlation_id=headers.get("ce_correlationid", headers["ce_id"]),
            causation_id=headers.get("ce_causationid"),
        )
