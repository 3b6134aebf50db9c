"""Rows of the embedded log as records and back: headers as JSON text, and a lenient
reading of rows this bus did not write."""

from __future__ import annotations

import json

from saga_registry.engine.bus import Delivery, Record

# The header that keeps the raw headers column of a row that could not be read.
RAW_HEADERS = "saga_raw_headers"


def encode_headers(headers: tuple[tuple[str, bytes], ...]) -> str:
    # Latin-1 maps every byte to one code point and back, so any bytes round-trip exactly,
    # and the usual ASCII header values stay readable in the file.
    return json.dumps([[name, value.decode("latin-1")] for name, value in headers])


def _decode_headers(text: str | bytes) -> tuple[tuple[str, bytes], ...]:
    """The headers `encode_headers` wrote; raises `ValueError` for anything else."""
    pairs = json.loads(text)
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise ValueError("not a list of [name, value] text pairs")
    return tuple((name, value.encode("latin-1")) for name, value in pairs)


def _as_bytes(column: object) -> bytes:
    """A key or value column as bytes, whatever SQLite type a foreign writer gave it."""
    if isinstance(column, bytes):
        return column
    if column is None:
        return b""
    return str(column).encode("utf-8", "surrogateescape")


def delivery_of(topic: str, row: tuple[int, int, object, object, object]) -> Delivery:
    """A row as a delivery; a row this bus did not write (a foreign or damaged one) is
    marked unreadable with what could be read, its raw headers column kept as a header."""
    partition, offset, key, headers, value = row
    unreadable = None
    try:
        if not isinstance(headers, str | bytes):
            raise ValueError(f"a {type(headers).__name__}, not text")
        decoded = _decode_headers(headers)
    except ValueError as exc:  # JSONDecodeError and UnicodeError are ValueErrors
        unreadable = f"headers column unreadable: {' '.join(str(exc).split())}"
        decoded = ((RAW_HEADERS, _as_bytes(headers)),)
    if not isinstance(key, bytes) or not isinstance(value, bytes):
        unreadable = unreadable or "key or value column is not a BLOB"
    record = Record(topic=topic, key=_as_bytes(key), value=_as_bytes(value), headers=decoded)
    return Delivery(record=record, partition=partition, offset=offset, unreadable=unreadable)
