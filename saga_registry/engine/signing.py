"""Signed events: each event carries an HMAC of its content made with its producer's key,
so that a service accepts an event only from the service the registry says produces it.

Opt-in per registry (`saga.signed_events: true`). The header `saga_signature` holds
`KEY_ID:SIGNATURE`, the signature being HMAC-SHA256, base64url without padding, over the
event's identity and content: `ce_id`, `ce_source`, `ce_type`, `ce_time`,
`ce_correlationid`, `ce_causationid`, the record key and the value, each length-prefixed,
then `ce_dataschema` (the event's version) when the record has one.
Routing headers the engine adds later (a replay's marks) are not covered, so a replayed
event keeps its signature. Nor is the trace context (`ce_traceparent`, `ce_tracestate`):
it says where an event sits in a trace, not what it says or who made it, and a tracing
proxy or broker plug-in may rewrite it on the way.

Keys are per service, several per service for rotation: the first is the one it signs
with, any of them verifies. They come from a JSON object, in the file named by
`SAGA_KEYS_FILE` (or `saga run --keys`) or inline in `SAGA_KEYS`:

    {"Payment": [{"id": "2026-12", "secret": "…"}, {"id": "2026-06", "secret": "…"}], …}

To rotate: give every service the new key second, then first (producers now sign with
it), then, once no event signed with the old key is left unread, remove the old key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from saga_registry.engine.bus import Record
from saga_registry.engine.errors import BadEnvelope, ConfigError

HEADER = "saga_signature"
_COVERED = ("ce_id", "ce_source", "ce_type", "ce_time", "ce_correlationid", "ce_causationid")
_MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class Key:
    """One secret of a service, named so that a verifier knows which one signed."""

    id: str
    secret: bytes


class Keyring:
    """Every service's keys; the first key of a service is the one it signs with."""

    def __init__(self, keys: Mapping[str, list[Key]]) -> None:
        self._keys = {service: list(ks) for service, ks in keys.items() if ks}

    @classmethod
    def from_environment(cls, path: str | None = None) -> Keyring:
        """The keys in file `path`, else in `SAGA_KEYS_FILE`'s file, else in `SAGA_KEYS`;
        raises `ConfigError` (one line naming the place) for anything malformed."""
        path = path or os.environ.get("SAGA_KEYS_FILE") or None
        if path:
            try:
                text, where = Path(path).read_text(encoding="utf-8"), f"keys file {path}"
            except OSError as exc:
                raise ConfigError(f"cannot read keys file {path}: {exc.strerror}") from None
        else:
            text, where = os.environ.get("SAGA_KEYS", ""), "SAGA_KEYS"
        if not text.strip():
            return cls({})
        return cls(_parse(text, where))

    def services(self) -> set[str]:
        """The services that have at least one key."""
        return set(self._keys)

    def sign(self, service: str, record: Record) -> Record:
        """`record` with `service`'s signature header (replacing any); raises
        `ConfigError` if `service` has no key."""
        keys = self._keys.get(service)
        if not keys:
            raise ConfigError(f"no signing key for service {service} (SAGA_KEYS / SAGA_KEYS_FILE)")
        key = keys[0]
        value = f"{key.id}:{_mac(key.secret, record)}".encode()
        headers = tuple((k, v) for k, v in record.headers if k != HEADER)
        return Record(record.topic, record.key, record.value, (*headers, (HEADER, value)))

    def verify(self, producer: str, record: Record) -> None:
        """Return if `record` is signed by one of `producer`'s keys; else raise
        `BadEnvelope` saying what is wrong (unsigned, unknown key, wrong signature)."""
        raw = record.header(HEADER)
        if raw is None:
            raise BadEnvelope(f"unsigned event: events of {producer} must be signed")
        key_id, _, signature = raw.decode("utf-8", "replace").partition(":")
        key = next((k for k in self._keys.get(producer, ()) if k.id == key_id), None)
        if key is None:
            raise BadEnvelope(f"event signed with key {key_id!r}, not a key of {producer}")
        if not hmac.compare_digest(signature, _mac(key.secret, record)):
            raise BadEnvelope(f"wrong signature: not signed by {producer}'s key {key_id!r}")


def _mac(secret: bytes, record: Record) -> str:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    parts = [*(record.header(h) or b"" for h in _COVERED), record.key, record.value]
    # Covered when present only, so that events signed before versions verify as they did;
    # the version decides how a payload is read, so it must not be swapped.
    dataschema = record.header("ce_dataschema")
    if dataschema:
        parts.append(dataschema)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def _parse(text: str, where: str) -> dict[str, list[Key]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object of service names to lists of keys")
    out: dict[str, list[Key]] = {}
    for service, entries in data.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: {service}: expected a non-empty list of keys")
        keys: list[Key] = []
        for n, entry in enumerate(entries, 1):
            at = f"{where}: {service}: key {n}"
            if not isinstance(entry, dict) or set(entry) != {"id", "secret"}:
                raise ConfigError(f'{at}: expected {{"id": ..., "secret": ...}}')
            key_id, secret = entry["id"], entry["secret"]
            if not isinstance(key_id, str) or not key_id or ":" in key_id:
                raise ConfigError(f"{at}: id must be a non-empty string without ':'")
            if not isinstance(secret, str) or len(secret.encode()) < _MIN_SECRET_BYTES:
                raise ConfigError(f"{at}: secret must be a string of {_MIN_SECRET_BYTES}+ bytes")
            if any(k.id == key_id for k in keys):
                raise ConfigError(f"{at}: id {key_id!r} is used twice")
            keys.append(Key(key_id, secret.encode()))
        out[service] = keys
    return out
