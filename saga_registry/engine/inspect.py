"""The read side: what the services' databases say about sagas, for `saga sagas` and
`saga trace`. Nothing here writes: a service whose database does not exist (no SQLite file,
no PostgreSQL database) is reported absent, never created, and a table a database lacks
reads as empty (so do columns an older version did not have)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import Table, inspect, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from saga_registry.engine import tables
from saga_registry.engine.database import database_url, shown
from saga_registry.engine.errors import DatabaseUnavailable
from saga_registry.registry.model import Registry

Row = dict[str, Any]


class Absent(Exception):
    """A service's database does not exist (yet): nothing to read there."""


@asynccontextmanager
async def reader(url: URL) -> AsyncIterator[AsyncConnection]:
    """A connection to an existing database, in one transaction that is never committed.

    Raises `Absent` if the database does not exist and `DatabaseUnavailable` if it cannot
    be reached; neither case creates anything."""
    where = shown(url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not url.database or url.database == ":memory:" or not path.is_file():
            raise Absent(f"no database file {path}")
        # mode=rw: open, never create (a file removed meanwhile stays absent).
        uri = f"{path.resolve().as_uri()}?mode=rw"

        async def connect() -> aiosqlite.Connection:
            return await aiosqlite.connect(uri, uri=True, timeout=30)

        engine = create_async_engine(
            "sqlite+aiosqlite://", async_creator=connect, poolclass=NullPool
        )
    else:
        engine = create_async_engine(url, poolclass=NullPool)
    try:
        try:
            conn = await engine.connect().start()
        except (DBAPIError, OperationalError, OSError) as exc:
            if _no_such_database(exc):
                raise Absent(f"no database {url.database}") from None
            raise DatabaseUnavailable(f"cannot read database {where}: {_reason(exc)}") from None
        try:
            transaction = await conn.begin()
        except BaseException:
            await conn.close()
            raise
        try:
            yield conn
        except (DBAPIError, OperationalError) as exc:
            raise DatabaseUnavailable(f"cannot read database {where}: {_reason(exc)}") from None
        finally:
            await transaction.rollback()
            await conn.close()
    finally:
        await engine.dispose()


def _no_such_database(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code == "3D000" or "does not exist" in str(exc)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


async def read_rows(conn: AsyncConnection, table: Table, *where: Any) -> list[Row]:
    """`table`'s rows matching `where`, as dicts; a missing table gives no rows, a missing
    column (a database of an older version) reads as None."""
    columns = await conn.run_sync(_columns, table.name)
    if columns is None:
        return []
    # Every filter here is `column == value`: a filter on a column the table lacks matches
    # nothing.
    if any(getattr(getattr(w, "left", None), "name", None) not in columns for w in where):
        return []
    chosen = [c for c in table.columns if c.name in columns]
    rows = (await conn.execute(select(*chosen).where(*where))).mappings().all()
    return [{c.name: row.get(c.name) for c in table.columns} for row in rows]


def _columns(sync_conn: Any, name: str) -> set[str] | None:
    insp = inspect(sync_conn)
    if not insp.has_table(name):
        return None
    return {c["name"] for c in insp.get_columns(name)}


async def databases(
    registry: Registry, template: str, notes: list[str]
) -> AsyncIterator[tuple[str, AsyncConnection]]:
    """Each service of `registry` whose database (`template`, `{service}` in it) can be
    read, with a reading connection; a database that does not exist or cannot be read,
    then or while the caller reads it, is one note in `notes` and is passed over."""
    for service in registry.services:
        try:
            async with reader(database_url(template, service.name)) as conn:
                yield service.name, conn
        except (Absent, DatabaseUnavailable) as exc:
            notes.append(f"{service.name}: skipped ({exc})")


# ---------------------------------------------------------------------------- sagas


@dataclass(frozen=True, slots=True)
class SagaView:
    """One saga as the services' databases show it: the most advanced of their views."""

    saga_id: str
    state: str
    updated_at: float
    started_at: float | None
    correlation_id: str | None
    seen_by: str
    """The service whose view this is."""
    views: tuple[tuple[str, str], ...]
    """Every service's state of the saga (service, state), in registry order."""
    due_at: float | None = None
    """The earliest pending deadline of the saga in its current state, if any."""
    parked_in: tuple[str, ...] = ()
    """The services that parked the saga (an event of it dead-lettered there)."""


def reachable(registry: Registry) -> dict[str, frozenset[str]]:
    """For each state of the registry's machine, the states its transitions lead to,
    directly or not."""
    edges: dict[str, set[str]] = {}
    for src, _, dst in registry.state_machine.edges():
        edges.setdefault(src, set()).add(dst)
    found: dict[str, frozenset[str]] = {}
    for state in (s.name for s in registry.state_machine.states):
        seen: set[str] = set()
        todo = list(edges.get(state, ()))
        while todo:
            nxt = todo.pop()
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(edges.get(nxt, ()))
        found[state] = frozenset(seen)
    return found


def most_advanced(
    rows: Sequence[tuple[str, Row]],
    terminal: frozenset[str],
    reach: dict[str, frozenset[str]],
) -> tuple[str, Row]:
    """Of several services' views of one saga, the most advanced: each service applies the
    log at its own pace and only the events of its projection, so copies disagree (none is
    ever ahead of the log). A copy whose state leads on to another copy's is behind it,
    whenever it was updated; of the copies no other is ahead of, a terminal state wins,
    then the latest `updated_at`."""

    def behind(state: str) -> bool:
        return any(
            other != state and other in reach.get(state, ()) and state not in reach.get(other, ())
            for other in (r["state"] for _, r in rows)
        )

    ahead = [sr for sr in rows if not behind(sr[1]["state"])] or list(rows)
    return max(ahead, key=lambda sr: (sr[1]["state"] in terminal, sr[1]["updated_at"] or 0.0))


async def saga_views(
    registry: Registry,
    template: str,
    also: Callable[[str, AsyncConnection], Awaitable[None]] | None = None,
) -> tuple[list[SagaView], list[str]]:
    """Every saga any service knows, merged across services (`most_advanced`), with its
    pending deadlines; and one note per service database that could not be read. `also`
    reads more from each database in the same visit (service name, connection)."""
    notes: list[str] = []
    states: dict[str, list[tuple[str, Row]]] = {}
    timers: dict[str, list[Row]] = {}
    parked: dict[str, list[str]] = {}
    async for service, conn in databases(registry, template, notes):
        for row in await read_rows(conn, tables.saga_state):
            states.setdefault(row["saga_id"], []).append((service, row))
        for row in await read_rows(conn, tables.timers):
            timers.setdefault(row["saga_id"], []).append(row)
        for row in await read_rows(conn, tables.parked):
            parked.setdefault(row["saga_id"], []).append(service)
        if also is not None:
            await also(service, conn)
    terminal = frozenset(registry.state_machine.terminal_states)
    reach = reachable(registry)
    views = []
    for saga_id, rows in states.items():
        seen_by, best = most_advanced(rows, terminal, reach)
        due = [t["due_at"] for t in timers.get(saga_id, ()) if t["state"] == best["state"]]
        started = [r["started_at"] for _, r in rows if r["started_at"] is not None]
        views.append(
            SagaView(
                saga_id=saga_id,
                state=best["state"],
                updated_at=best["updated_at"],
                started_at=min(started) if started else None,
                correlation_id=best["correlation_id"],
                seen_by=seen_by,
                views=tuple((s, r["state"]) for s, r in rows),
                due_at=min(due) if due else None,
                parked_in=tuple(parked.get(saga_id, ())),
            )
        )
    return views, notes


STATUSES = ("in-flight", "stuck", "parked", "ended")


def status(
    view: SagaView, terminal: frozenset[str], stuck_for: float | None, now: float | None = None
) -> str:
    """`ended` (terminal), `parked` (an event of it was dead-lettered by a service, which
    holds its later events until `saga dlq replay`), `stuck` (a pending deadline is past
    due, or with `stuck_for`, not updated for longer) or `in-flight`."""
    if view.state in terminal:
        return "ended"
    if view.parked_in:
        return "parked"
    now = time.time() if now is None else now
    if view.due_at is not None and view.due_at < now:
        return "stuck"
    if stuck_for is not None and now - view.updated_at > stuck_for:
        return "stuck"
    return "in-flight"


# ---------------------------------------------------------------------------- one saga


@dataclass(slots=True)
class ServiceRecords:
    """What one service's database holds about one saga."""

    inbox: list[Row] = field(default_factory=list)
    skipped: list[Row] = field(default_factory=list)
    outbox: list[Row] = field(default_factory=list)
    parked: Row | None = None
    state: Row | None = None

    def empty(self) -> bool:
        """Whether this service has no trace of the saga."""
        return not (self.inbox or self.skipped or self.outbox or self.parked or self.state)


async def saga_records(
    registry: Registry, template: str, saga_id: str
) -> tuple[dict[str, ServiceRecords], list[str]]:
    """Per service (those whose database exists), its rows about `saga_id`; and one note
    per service database that could not be read."""
    found: dict[str, ServiceRecords] = {}
    notes: list[str] = []
    async for service_name, conn in databases(registry, template, notes):
        parked = await read_rows(conn, tables.parked, tables.parked.c.saga_id == saga_id)
        state = await read_rows(conn, tables.saga_state, tables.saga_state.c.saga_id == saga_id)
        found[service_name] = ServiceRecords(
            inbox=await read_rows(conn, tables.inbox, tables.inbox.c.saga_id == saga_id),
            skipped=await read_rows(conn, tables.skipped, tables.skipped.c.saga_id == saga_id),
            outbox=await read_rows(conn, tables.outbox, tables.outbox.c.key == saga_id.encode()),
            parked=parked[0] if parked else None,
            state=state[0] if state else None,
        )
    return found, notes


def outbox_headers(row: Row) -> dict[str, str]:
    """An outbox row's CloudEvents headers (stored as a JSON list of [name, value])."""
    return {str(k): str(v) for k, v in row.get("headers") or ()}
