"""A service's view of the wire: how a delivery becomes a typed event it may take in, and
what a reaction returns becomes a record it may send, both checked against the registry
(and signed or verified when the registry wants signed events)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Set
from typing import Any

import pydantic

from saga_registry.engine.bus import Delivery, Record
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope, ForbiddenEmit
from saga_registry.engine.signing import Keyring
from saga_registry.registry.model import Registry
from saga_registry.registry.versions import dataschema, upcast, version_in


class EventCodec:
    """Reads and writes the events of service `service` on `topic`.

    `reactions` maps each event type it reacts to onto the types the reaction may emit;
    `deferring` holds the event types whose reaction may emit nothing now (it answers
    later)."""

    def __init__(
        self,
        registry: Registry,
        service: str,
        event_types: Mapping[str, Any],
        reactions: Mapping[str, tuple[str, ...]],
        deferring: Set[str],
        topic: str,
    ) -> None:
        self.registry = registry
        self.service = service
        self.event_types = event_types
        self.reactions = reactions
        self.deferring = deferring
        self.topic = topic
        self.source = f"saga/{registry.name}/{service}"
        self.keyring: Keyring | None = None
        """The keys that sign and verify events, when the registry wants them signed."""
        self.dataschemas = {
            e.name: dataschema(registry.name, e.name, e.version) for e in registry.events
        }
        """Each event type's `dataschema`: its current version, written on what it emits."""

    def read(self, delivery: Delivery) -> tuple[Envelope, Any]:
        """The envelope and the typed event `delivery` carries, its signature checked
        when the registry wants signed events; raises `BadEnvelope` saying what is wrong."""
        envelope = envelope_of(delivery)
        event = self.decode(envelope)
        if self.keyring is not None:
            self.keyring.verify(self.registry.event(envelope.type).producer, delivery.record)
        return envelope, event

    def decode(self, envelope: Envelope) -> Any:
        """The typed event of `envelope`; raises `BadEnvelope` if it is not one."""
        cls = self.event_types.get(envelope.type)
        if cls is None:
            raise BadEnvelope(f"unknown event type {envelope.type!r}")
        try:
            version = self.version(envelope)
            current = self.registry.event(envelope.type).version
            if version == current:
                event = cls.from_json(envelope.data)
            else:
                event = cls.from_dict(self._upcast(envelope, version))
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
            raise BadEnvelope(
                f"invalid {envelope.type} payload: {where}: {first['msg']} "
                f"({exc.error_count()} error(s))"
            ) from None
        if event.saga_id() != envelope.saga_id:
            raise BadEnvelope(
                f"record key {envelope.saga_id!r} differs from the payload's "
                f"{self.registry.key} {event.saga_id()!r}"
            )
        return event

    def version(self, envelope: Envelope) -> int:
        """The version of its event `envelope` carries (`registry.versions.version_in`);
        raises `BadEnvelope` for a version this registry cannot read."""
        try:
            return version_in(self.registry.event(envelope.type), envelope.dataschema)
        except ValueError as exc:
            raise BadEnvelope(str(exc)) from None

    def _upcast(self, envelope: Envelope, version: int) -> dict[str, Any]:
        try:
            payload = json.loads(envelope.data)
        except ValueError as exc:
            raise BadEnvelope(f"invalid {envelope.type} payload: not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadEnvelope(f"invalid {envelope.type} payload: not a JSON object")
        return upcast(self.registry.event(envelope.type), payload, version)

    def emitted_envelope(
        self, cause: Envelope, emitted: Any, trace: tuple[str, str] | None = None
    ) -> Envelope | None:
        """The envelope of what a reaction to `cause` returned (None for nothing);
        raises `ForbiddenEmit` if the registry does not allow it. `trace` is the
        (traceparent, tracestate) of the span that handled `cause`, when traced."""
        allowed = self.reactions.get(cause.type, ())
        if emitted is None:
            if allowed and cause.type not in self.deferring:
                raise ForbiddenEmit(
                    f"{self.service} reaction to {cause.type} returned nothing; "
                    f"it must emit one of {', '.join(allowed)}"
                )
            return None
        kind = getattr(emitted, "event_type", type(emitted).__name__)
        if kind not in allowed:
            raise ForbiddenEmit(
                f"{self.service} reaction to {cause.type} emitted {kind}; the "
                f"registry allows {', '.join(allowed) or 'nothing'}"
            )
        if emitted.saga_id() != cause.saga_id:
            raise ForbiddenEmit(
                f"{self.service} emitted {kind} for saga {emitted.saga_id()!r} "
                f"while handling saga {cause.saga_id!r}"
            )
        traceparent, tracestate = trace or ("", "")
        return Envelope.new(
            type=kind,
            source=self.source,
            saga_id=cause.saga_id,
            data=emitted.to_json(),
            cause=cause,
            traceparent=traceparent,
            tracestate=tracestate,
        )

    def record_of(self, env: Envelope) -> Record:
        """`env` as the record to send, carrying its event's current version, signed when
        the registry wants signed events."""
        if not env.dataschema:
            env = dataclasses.replace(env, dataschema=self.dataschemas.get(env.type, ""))
        record = env.to_record(self.topic)
        if self.keyring is not None:
            record = self.keyring.sign(self.service, record)
        return record


def envelope_of(delivery: Delivery) -> Envelope:
    """The envelope `delivery` carries; raises `BadEnvelope` naming what is wrong, also
    when the bus could not read the record at all."""
    if delivery.unreadable is not None:
        raise BadEnvelope(f"unreadable record: {delivery.unreadable}")
    return Envelope.from_record(delivery.record)
