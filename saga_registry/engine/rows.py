"""The engine's own rows on a delivery's hot path, as plain SQL for the driver.

Every delivery reads and writes the same few engine tables (inbox, state, skipped,
outbox, marks). Through SQLAlchemy Core each statement is compiled or looked up in a
cache, its expanding IN list rendered, its parameters processed, per call: several times
the cost of the statement itself on SQLite. Here each statement is SQL text written once
(an IN list's text once per length), run with `exec_driver_sql`, many rows in one
`executemany`: same connection, same transaction as the reaction's own writes, which
keep SQLAlchemy (`ctx.db`).

The text is the subset of SQL that SQLite and PostgreSQL share, written with `?`
placeholders and renumbered `$1, $2, ...` for a driver that wants them (asyncpg).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=2048)
def _for_driver(sql: str, paramstyle: str) -> str:
    """`sql` with `?` placeholders rewritten for a driver of `paramstyle`."""
    if paramstyle == "qmark":
        return sql
    if paramstyle in ("numeric_dollar", "numeric"):
        mark = "$" if paramstyle == "numeric_dollar" else ":"
        count = iter(range(1, 1 << 20))
        return _PLACEHOLDER.sub(lambda _: f"{mark}{next(count)}", sql)
    raise ValueError(f"no driver SQL for paramstyle {paramstyle!r}")


def _in(count: int) -> str:
    return "(" + ",".join("?" * count) + ")"


async def _run(conn: AsyncConnection, sql: str, params: Any) -> Any:
    return await conn.exec_driver_sql(_for_driver(sql, conn.dialect.paramstyle), params)


async def seen(conn: AsyncConnection, event_ids: Sequence[str]) -> set[tuple[str, str]]:
    """The (event id, source) pairs of the inbox among `event_ids`."""
    sql = f"SELECT event_id, source FROM saga_inbox WHERE event_id IN {_in(len(event_ids))}"
    return {(r[0], r[1]) for r in await _run(conn, sql, tuple(event_ids))}


async def any_parked(conn: AsyncConnection, sagas: Sequence[str]) -> bool:
    """Whether any of `sagas` is parked."""
    sql = f"SELECT saga_id FROM saga_parked WHERE saga_id IN {_in(len(sagas))} LIMIT 1"
    return (await _run(conn, sql, tuple(sagas))).first() is not None


async def states(conn: AsyncConnection, sagas: Sequence[str]) -> dict[str, str]:
    """The stored state of each of `sagas` that has one."""
    sql = f"SELECT saga_id, state FROM saga_state WHERE saga_id IN {_in(len(sagas))}"
    return {r[0]: r[1] for r in await _run(conn, sql, tuple(sagas))}


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {_in(len(columns))}"


def _values(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in columns) for r in rows]


_INBOX = (
    "event_id",
    "source",
    "event_type",
    "saga_id",
    "received_at",
    "log_partition",
    "log_offset",
)
_SKIPPED = (
    "event_id",
    "event_type",
    "saga_id",
    "state",
    "reason",
    "at",
    "log_partition",
    "log_offset",
)
_INSERT_INBOX = _insert("saga_inbox", _INBOX)
_INSERT_SKIPPED = _insert("saga_skipped", _SKIPPED)
_INSERT_STATE = (
    "INSERT INTO saga_state (saga_id, state, updated_at, correlation_id, entered_by,"
    " started_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPDATE_STATE = "UPDATE saga_state SET state = ?, updated_at = ?, entered_by = ? WHERE saga_id = ?"
_INSERT_OUTBOX = (
    "INSERT INTO saga_outbox (event_id, topic, key, headers, value, created_at, sent_at)"
    " VALUES (?, ?, ?, ?, ?, ?, NULL)"
)
_RAISE_MARKS = (
    "INSERT INTO saga_positions (topic, log_partition, next_offset) VALUES (?, ?, ?)"
    " ON CONFLICT (topic, log_partition) DO UPDATE SET next_offset = CASE"
    " WHEN excluded.next_offset > saga_positions.next_offset THEN excluded.next_offset"
    " ELSE saga_positions.next_offset END"
)


async def _many(conn: AsyncConnection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await _run(conn, sql, rows)


async def insert_inbox(conn: AsyncConnection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Inbox rows (`batch.inbox_row`)."""
    await _many(conn, _INSERT_INBOX, _values(rows, _INBOX))


async def insert_skipped(conn: AsyncConnection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Skipped rows (`batch.skip_row`)."""
    await _many(conn, _INSERT_SKIPPED, _values(rows, _SKIPPED))


async def insert_states(
    conn: AsyncConnection, rows: Iterable[tuple[str, str, float, str, str, float]]
) -> None:
    """New sagas: (saga id, state, updated at, correlation id, entered by, started at)."""
    await _many(conn, _INSERT_STATE, list(rows))


async def update_states(conn: AsyncConnection, rows: Iterable[tuple[str, str, float, str]]) -> None:
    """Sagas that moved: (saga id, state, updated at, entered by)."""
    await _many(conn, _UPDATE_STATE, [(s, at, by, saga) for saga, s, at, by in rows])


async def insert_outbox(conn: AsyncConnection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Outbox rows (`ServiceRunner.outbox_row`), in the order given (their ids give the
    relay's order)."""
    await _many(
        conn,
        _INSERT_OUTBOX,
        [
            (
                r["event_id"],
                r["topic"],
                r["key"],
                json.dumps(r["headers"]),
                r["value"],
                r["created_at"],
            )
            for r in rows
        ],
    )


async def raise_marks(conn: AsyncConnection, marks: Mapping[tuple[str, int], int]) -> None:
    """Each (topic, partition) mark to at least the given offset, in one statement
    (replicas sharing the database raise them concurrently, so a mark never goes down)."""
    await _many(conn, _RAISE_MARKS, [(topic, p, o) for (topic, p), o in marks.items()])


async def mark_sent(conn: AsyncConnection, event_ids: Sequence[str], now: float) -> None:
    """Mark the unsent outbox rows of `event_ids` sent at `now`."""
    sql = (
        "UPDATE saga_outbox SET sent_at = ? WHERE sent_at IS NULL"
        f" AND event_id IN {_in(len(event_ids))}"
    )
    await _run(conn, sql, (now, *event_ids))
