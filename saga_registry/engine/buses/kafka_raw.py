"""Reading a Kafka partition byte by byte, for the records aiokafka cannot decode.

aiokafka decodes every header name as UTF-8 and decompresses every batch while it fetches;
one record it cannot read (a header name that is not UTF-8, a codec it lacks, a broken
batch) makes every fetch of the consumer fail, on every partition. Kafka itself stores
header names as bytes, so any client may write such a record. This module fetches a
partition's raw record batches with a plain Fetch request and reads them leniently: every
record comes out with whatever could be read of it, and `unreadable` says why it is not a
record the runtime can take in. The subscription uses it only after a failed fetch, and
`read_all` for tools that must show everything on a topic.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import calc_crc32c, decode_varint
from aiokafka.structs import TopicPartition

from saga_registry.engine.bus import Delivery, Record

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH_END = 12  # baseOffset and batchLength: what batchLength does not count
_CRC_START = 21  # the CRC covers the batch from the attributes on
_CONTROL = 0x20
_CODECS: dict[int, tuple[str, Callable[[bytes], bytes]]] = {
    1: ("gzip", gzip_decode),
    2: ("snappy", snappy_decode),
    3: ("lz4", lz4_decode),
    4: ("zstd", zstd_decode),
}
_READ_UNCOMMITTED = 0
_MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as far as it could be read; `unreadable` says what could not be."""

    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    unreadable: str | None = None


def read_batches(data: bytes) -> Iterator[RawRecord]:
    """Every record in `data`, a partition's record batches as the broker sent them.

    Only the message format of Kafka 0.11 and later (magic 2) is read; an older batch, a
    batch whose checksum does not match, that cannot be decompressed or whose records do
    not parse gives one unreadable record per offset it covers, the first carrying the
    batch's bytes."""
    for base, last, magic, crc, attributes, count, batch in _batches(data):
        if attributes & _CONTROL and magic == 2:
            continue  # transaction markers are not records
        try:
            if magic != 2:
                raise ValueError(f"message format {magic} (before Kafka 0.11) is not read")
            if calc_crc32c(batch[_CRC_START:]) != crc:
                raise ValueError("checksum mismatch")
            records = list(_records(base, attributes, count, batch[_BATCH_HEADER.size :]))
        except Exception as exc:  # anything unreadable in the batch makes it all so
            reason = f"record batch at offset {base} unreadable: {_text(exc)}"
            yield RawRecord(base, b"", batch, (), reason)
            for offset in range(base + 1, last + 1):
                yield RawRecord(offset, b"", b"", (), reason)
            continue
        yield from records


def next_offset(data: bytes, start: int) -> int:
    """The offset after the last whole batch in `data` (`start` if there is none)."""
    return max((last + 1 for _, last, *_ in _batches(data)), default=start)


def _batches(data: bytes) -> Iterator[tuple[int, int, int, int, int, int, bytes]]:
    """(base offset, last offset, magic, crc, attributes, record count, bytes) of each
    whole batch; a trailing batch cut short by the fetch size is left out."""
    view = memoryview(data)
    pos = 0
    while pos + _BATCH_HEADER.size <= len(view):
        base, length, _, magic, crc, attributes, last_delta, *_, count = _BATCH_HEADER.unpack_from(
            view, pos
        )
        end = pos + _LENGTH_END + length
        if length <= 0 or end > len(view):
            return
        yield base, base + last_delta, magic, crc, attributes, count, bytes(view[pos:end])
        pos = end


def _records(base: int, attributes: int, count: int, body: bytes) -> Iterator[RawRecord]:
    codec = attributes & 0x07
    if codec:
        name, decompress = _CODECS.get(codec, (f"codec {codec}", _unknown_codec))
        try:
            body = decompress(body)
        except Exception as exc:
            raise ValueError(f"cannot decompress {name}: {_text(exc)}") from exc
    buf = bytearray(body)
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(buf, pos)
        end = pos + length
        if length < 0 or end > len(buf):
            raise ValueError("record length beyond the batch")
        pos += 1  # record attributes: unused
        _, pos = decode_varint(buf, pos)  # timestamp delta
        delta, pos = decode_varint(buf, pos)
        key, pos = _bytes(buf, pos)
        value, pos = _bytes(buf, pos)
        n_headers, pos = decode_varint(buf, pos)
        headers: list[tuple[str, bytes]] = []
        problems: list[str] = []
        for _ in range(n_headers):
            raw_name, pos = _bytes(buf, pos)
            header_value, pos = _bytes(buf, pos)
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                # Kept readable (escaped) so the dead-letter copy can carry it.
                name = raw_name.decode("utf-8", "backslashreplace")
                problems.append(f"header name {name!r} is not UTF-8")
            headers.append((name, header_value))
        if pos != end:
            raise ValueError(f"record at offset {base + delta} does not end where it says")
        yield RawRecord(base + delta, key, value, tuple(headers), "; ".join(problems) or None)


def _bytes(buf: bytearray, pos: int) -> tuple[bytes, int]:
    """A varint-length-prefixed byte string (-1: null, read as empty)."""
    length, pos = decode_varint(buf, pos)
    if length < 0:
        return b"", pos
    if pos + length > len(buf):
        raise ValueError("field length beyond the record")
    return bytes(buf[pos : pos + length]), pos + length


def _unknown_codec(_: bytes) -> bytes:
    raise ValueError("unknown compression")


def _text(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def delivery(tp: TopicPartition, raw: RawRecord) -> Delivery:
    """`raw` as a delivery of partition `tp`."""
    return Delivery(
        record=Record(tp.topic, raw.key, raw.value, raw.headers),
        partition=tp.partition,
        offset=raw.offset,
        unreadable=raw.unreadable,
    )


class RawReader:
    """Fetches record batches of any partition over its own connection to the cluster.

    `options` are the aiokafka client settings of the bus (servers, security, timeouts)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._client = AIOKafkaClient(**options)

    async def __aenter__(self) -> RawReader:
        await self._client.bootstrap()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.close()

    async def read(self, tp: TopicPartition, start: int) -> tuple[list[RawRecord], int]:
        """The records of `tp` from offset `start` that one fetch brings, and the offset
        to read on from (`start` at the end of the partition)."""
        await self._client._wait_on_metadata(tp.topic)
        leader = self._client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            raise ConnectionError(f"no leader for {tp.topic}/{tp.partition}")
        request = FetchRequest(
            0, 1, _MAX_BYTES, _READ_UNCOMMITTED, [(tp.topic, [(tp.partition, start, _MAX_BYTES)])]
        )
        response = await self._client.send(leader, request)
        for _, partitions in response.topics:
            for partition, error_code, _, *rest in partitions:
                if partition != tp.partition:
                    continue
                if error_code:
                    raise for_code(error_code)(f"fetch {tp.topic}/{tp.partition} at {start}")
                data = bytes(rest[-1] or b"")
                records = [r for r in read_batches(data) if r.offset >= start]
                return records, next_offset(data, start)
        return [], start

    async def read_range(self, tp: TopicPartition, start: int, end: int) -> list[RawRecord]:
        """Every record of `tp` with an offset in [start, end)."""
        out: list[RawRecord] = []
        while start < end:
            records, after = await self.read(tp, start)
            out.extend(r for r in records if r.offset < end)
            if after <= start:
                break  # nothing more to read (deleted meanwhile)
            start = after
        return out
