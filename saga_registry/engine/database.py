"""A service's database: SQLAlchemy 2 async on SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from saga_registry.engine import sqlite_inline
from saga_registry.engine.errors import ConfigError, DatabaseUnavailable
from saga_registry.engine.tables import metadata as engine_metadata

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def database_url(template: str, service: str) -> URL:
    """The async URL of `service`'s database from a template such as
    `sqlite:///.saga/{service}.db` or `postgresql://user@host/saga_{service}`."""
    raw = template.replace("{service}", service.lower())
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"bad database URL {raw!r}: expected sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"unsupported database {backend!r} in {raw!r}: use sqlite or postgresql")
    if "+" not in url.drivername:
        url = url.set(drivername=_DRIVERS[url.drivername])
    if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"driver {url.drivername!r} in {raw!r} is not async: use "
            "sqlite:// (aiosqlite) or postgresql:// (asyncpg)"
        )
    return url


_CREATE_ATTEMPTS = 5


class Database:
    """One service's database. `start` creates missing tables (the engine's and the
    service's); `transaction()` yields a connection inside one transaction."""

    def __init__(self, url: URL, service_metadata: MetaData | None = None) -> None:
        self.url = url
        self._metadata = [engine_metadata, *([service_metadata] if service_metadata else [])]
        self._engine: AsyncEngine | None = None

    @property
    def where(self) -> str:
        """The database's URL as a user writes it: no driver, no password."""
        return shown(self.url)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is an SQLite database."""
        return self.url.get_backend_name() == "sqlite"

    async def start(self) -> None:
        """Open (creating the file or the PostgreSQL database if needed) and create tables."""
        where = self.where
        try:
            if self.is_sqlite:
                if self.url.database and self.url.database != ":memory:":
                    Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            else:
                await _create_pg_database(self.url)
            self._engine = _make_engine(self.url)
            await self._create_tables()
        except (OSError, DBAPIError, OperationalError, TimeoutError) as exc:
            await self.stop()
            raise DatabaseUnavailable(f"cannot open database {where}: {_reason(exc)}") from None

    async def _create_tables(self) -> None:
        assert self._engine is not None
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                async with self._engine.begin() as conn:
                    for md in self._metadata:
                        await conn.run_sync(md.create_all)
                    await conn.run_sync(_add_missing_columns)
                return
            except DBAPIError:
                # Processes starting together on a fresh database (a service and a CLI
                # command) race to create the same tables, and all but one CREATE fail.
                # Trying again finds the tables made; any other error fails again.
                if attempt == _CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(0.1 * attempt)

    async def stop(self) -> None:
        """Close every connection; idempotent."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        if self._engine is None:
            raise RuntimeError("Database.start() was not called")
        async with self._engine.begin() as conn:
            yield conn


def _add_missing_columns(conn: Connection) -> None:
    """Add the engine's nullable columns that a database made by an older version lacks
    (`create_all` makes missing tables, never missing columns)."""
    inspector = inspect(conn)
    for table in engine_metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise DatabaseUnavailable(
                    f"table {table.name} lacks column {column.name}, which cannot be added"
                )
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _make_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_size=5, pool_pre_ping=True)
    # One connection, run inline on the loop (`sqlite_inline` says why and what it
    # trades): the process's transactions on this file take turns at the pool.
    engine = create_async_engine(
        url,
        async_creator=sqlite_inline.connector(url.database or ":memory:", timeout_s=30),
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets a reader run beside the writer; NORMAL is durable across a process
        # crash (kill -9) in WAL mode, which is what the engine promises.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


async def _create_pg_database(url: URL) -> None:
    """Create the service's PostgreSQL database if it does not exist yet."""
    name = url.database
    if not name:
        raise ConfigError(f"no database name in {url.render_as_string(hide_password=True)}")
    admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = text("SELECT 1 FROM pg_database WHERE datname = :n")
            if not await conn.scalar(exists, {"n": name}):
                quoted = '"' + name.replace('"', '""') + '"'
                try:
                    await conn.execute(text(f"CREATE DATABASE {quoted}"))
                except DBAPIError:
                    # A sibling process created it meanwhile (PostgreSQL says so as
                    # "already exists" or as a unique violation, depending on timing).
                    if not await conn.scalar(exists, {"n": name}):
                        raise
    finally:
        await admin.dispose()


# SQLite's words for a damaged file or failing storage, and PostgreSQL's SQLSTATEs for
# the same (XX001 data_corrupted, XX002 index_corrupted, 58030 io_error).
_SQLITE_DAMAGE = ("database disk image is malformed", "file is not a database", "disk i/o error")
_PG_DAMAGE = {"XX001", "XX002", "58030"}


def damage(exc: BaseException) -> str | None:
    """Why `exc` says the database itself is damaged or its storage failing, or None
    (a passing outage, a constraint a reaction broke, anything else)."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    message = _reason(exc)
    if code in _PG_DAMAGE or any(words in message.lower() for words in _SQLITE_DAMAGE):
        return message
    return None


def shown(url: URL) -> str:
    """`url` as a user writes it (`sqlite:///x.db`, not `sqlite+aiosqlite:///x.db`), its
    password hidden."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip().splitlines()
    return text_[0] if text_ else type(orig).__name__
