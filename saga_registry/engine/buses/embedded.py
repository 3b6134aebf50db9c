"""`EmbeddedBus`: the bus contract kept in one SQLite file, for one machine without Kafka.

Several OS processes may open the same file at once: the database runs in WAL mode (readers
never block the writer), every write is one short `BEGIN IMMEDIATE` transaction (so two
processes never assign the same offset), and `busy_timeout` makes a writer wait for the
other instead of failing.

Each bus keeps one stdlib `sqlite3` connection, used only from its own one-thread executor:
each operation (a whole publish, a whole fetch) is one function run there, so a transaction
never stays open across an `await`, and a cancelled caller cannot leave one half done.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from saga_registry.engine.bus import Bus, Delivery, Owner, Record, Subscription, TopicSpec
from saga_registry.engine.buses.embedded_rows import delivery_of, encode_headers
from saga_registry.engine.buses.embedded_subscription import EmbeddedSubscription
from saga_registry.engine.errors import BusUnavailable

_T = TypeVar("_T")

# `partition` and `offset` are SQL keywords, hence the quotes wherever they are columns.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key BLOB NOT NULL,
    headers TEXT NOT NULL,
    value BLOB NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (topic, "partition", "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    "group" TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    PRIMARY KEY ("group", topic, "partition")
) WITHOUT ROWID;
"""

_BUSY_TIMEOUT_MS = 10_000


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of `key`: stable across processes and runs (unlike `hash()`)."""
    return zlib.crc32(key) % partitions


class EmbeddedBus(Bus):
    """A durable log in the SQLite file `path`, shared safely by processes on one machine.

    - `publish` returns once its one transaction is committed with `synchronous=FULL`: the
      WAL is fsynced at every commit, so published records survive a killed process and
      also a power cut (NORMAL would only survive the former; one fsync per publish call
      is cheap because a call's records share it).
    - Topics that were never ensured are created on first publish with
      `partitions_default` partitions (as Kafka's auto-create does).
    - A record goes to partition `crc32(key) % partitions`; offsets count from 0 per
      partition, without gaps.
    - Subscriptions poll the file every `poll_interval_s` while they wait for records.
    - At most one subscription per group should be open at a time (across all processes):
      there is no group coordinator to split partitions between members, so two would
      both receive every record.
    """

    def __init__(
        self, path: str | Path, partitions_default: int = 1, poll_interval_s: float = 0.02
    ) -> None:
        if partitions_default < 1:
            raise ValueError("partitions_default must be at least 1")
        self.path = Path(path)
        self.partitions_default = partitions_default
        self.poll_interval_s = poll_interval_s
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        """Create the file, its directories and tables if needed, and open it.

        Raises `BusUnavailable` if the file cannot be created or opened as a log.
        """
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-bus")
        try:
            self._conn = await self._run(self._open)
        except (OSError, sqlite3.Error) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise BusUnavailable(f"cannot open embedded log at {self.path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE, see publish).
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=_BUSY_TIMEOUT_MS / 1000,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is needed")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(group_offsets)")}
            if "owner" not in columns:  # a log made by an older version
                conn.execute("ALTER TABLE group_offsets ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        except BaseException:
            conn.close()
            raise
        return conn

    async def stop(self) -> None:
        """Close the file; idempotent. Open subscriptions stop working."""
        executor, conn = self._executor, self._conn
        self._executor, self._conn = None, None
        if executor is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=False)

    async def ensure_topics(self, topics: Sequence[TopicSpec]) -> None:
        """Create the missing topics; existing ones keep their partition count."""
        rows = [(t.name, t.partitions) for t in topics]
        await self._write(
            lambda c: c.executemany(
                "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)", rows
            )
        )

    async def publish(self, records: Sequence[Record]) -> None:
        """Append `records` in one transaction; durable (fsynced) when this returns."""
        if records:
            await self._write(lambda c: self._append(c, records))

    def _append(self, conn: sqlite3.Connection, records: Sequence[Record]) -> None:
        # Runs inside BEGIN IMMEDIATE: the write lock is held from the first read of the
        # next offsets, so no other process can take the same ones.
        partitions: dict[str, int] = {}
        next_offsets: dict[tuple[str, int], int] = {}
        now = time.time()
        rows = []
        for record in records:
            if record.topic not in partitions:
                partitions[record.topic] = self._topic_partitions(conn, record.topic)
            partition = partition_for(record.key, partitions[record.topic])
            place = (record.topic, partition)
            if place not in next_offsets:
                next_offsets[place] = conn.execute(
                    'SELECT COALESCE(MAX("offset") + 1, 0) FROM records'
                    ' WHERE topic = ? AND "partition" = ?',
                    place,
                ).fetchone()[0]
            offset = next_offsets[place]
            next_offsets[place] = offset + 1
            rows.append(
                (
                    record.topic,
                    partition,
                    offset,
                    record.key,
                    encode_headers(record.headers),
                    record.value,
                    now,
                )
            )
        conn.executemany(
            'INSERT INTO records (topic, "partition", "offset", key, headers, value, ts)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _topic_partitions(self, conn: sqlite3.Connection, topic: str) -> int:
        conn.execute(
            "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
            (topic, self.partitions_default),
        )
        row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
        return int(row[0])

    async def subscribe(
        self, group: str, topics: Sequence[str], owner: Owner | None = None
    ) -> Subscription:
        """A subscription of `group` to `topics` (topics may be created later)."""
        self._connection()
        return EmbeddedSubscription(self, group, tuple(topics), owner or Owner())

    async def committed(self, group: str, topic: str) -> dict[int, tuple[int, str]]:
        """The group's committed offsets on `topic`, with their owners."""
        rows = await self._read(
            lambda c: c.execute(
                'SELECT "partition", next_offset, owner FROM group_offsets'
                ' WHERE "group" = ? AND topic = ?',
                (group, topic),
            ).fetchall()
        )
        return {int(p): (int(n), str(o)) for p, n, o in rows}

    async def read_all(self, topic: str) -> list[Delivery]:
        """Every record of `topic`, by partition then offset; touches no group offset."""

        def read(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                'SELECT "partition", "offset", key, headers, value FROM records'
                ' WHERE topic = ? ORDER BY "partition", "offset"',
                (topic,),
            ).fetchall()
            return [delivery_of(topic, row) for row in rows]

        return await self._read(read)

    async def prune(
        self,
        retention_s: float,
        *,
        per_topic: Mapping[str, float] | None = None,
        now: float | None = None,
        chunk: int = 1000,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Delete records older than `retention_s` (`per_topic[topic]` for the topics it
        names) that every consumer group of their topic has committed past; returns how
        many were deleted.

        A record is kept while any group that has committed on its topic has not
        committed past it (a group with no offset on a partition counts as at 0), and the
        last record of each partition is always kept: the next offset is counted from it.
        A topic no group has committed on is pruned by age alone (as Kafka's retention
        does; the dead-letter topic is read without a group). Each chunk of `chunk`
        records is one short write transaction, so publishers and commits interleave;
        `stop`, once set, ends the pass after the chunk in hand.
        The file does not shrink: SQLite reuses the freed pages, so it levels off.
        """
        now = time.time() if now is None else now
        limits = dict(per_topic or {})
        deleted = 0
        partitions = await self._read(
            lambda c: c.execute("SELECT name, partitions FROM topics").fetchall()
        )
        for topic, count in partitions:
            cutoff = now - limits.get(topic, retention_s)
            for partition in range(int(count)):
                while True:
                    done = await self._prune_chunk(str(topic), partition, cutoff, chunk)
                    deleted += done
                    if stop is not None and stop.is_set():
                        return deleted
                    if done < chunk:
                        break
        return deleted

    async def _prune_chunk(self, topic: str, partition: int, cutoff: float, chunk: int) -> int:
        done: list[int] = []
        await self._write(lambda c: done.append(_prune(c, topic, partition, cutoff, chunk)))
        return done[0]

    # --- running work on the connection's thread ---------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BusUnavailable(f"embedded log at {self.path} is not started")
        return self._conn

    async def _run(self, fn: Callable[[], _T]) -> _T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._connection()
        try:
            return await self._run(lambda: fn(conn))
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot read embedded log at {self.path}: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        conn = self._connection()

        def transaction() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        try:
            await self._run(transaction)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"cannot write embedded log at {self.path}: {exc}") from exc


def _prune(conn: sqlite3.Connection, topic: str, partition: int, cutoff: float, chunk: int) -> int:
    """Delete up to `chunk` records of one partition that `EmbeddedBus.prune` may
    delete (inside the caller's write transaction, so the groups' offsets read here
    cannot move back under it); returns how many."""
    groups = conn.execute(
        'SELECT g."group", COALESCE(MAX(CASE WHEN g."partition" = ? THEN g.next_offset END), 0)'
        ' FROM group_offsets g WHERE g.topic = ? GROUP BY g."group"',
        (partition, topic),
    ).fetchall()
    last = conn.execute(
        'SELECT MAX("offset") FROM records WHERE topic = ? AND "partition" = ?',
        (topic, partition),
    ).fetchone()[0]
    if last is None:
        return 0
    below = min([int(last), *(int(n) for _, n in groups)])
    return conn.execute(
        'DELETE FROM records WHERE topic = ? AND "partition" = ? AND "offset" IN ('
        ' SELECT "offset" FROM records WHERE topic = ? AND "partition" = ?'
        ' AND "offset" < ? AND ts < ? ORDER BY "offset" LIMIT ?)',
        (topic, partition, topic, partition, below, cutoff, chunk),
    ).rowcount
