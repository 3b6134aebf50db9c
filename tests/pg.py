"""PostgreSQL for tests: the session fixture `pg_url`.

Import it into `tests/conftest.py` with `from tests.pg import pg_url  # noqa: F401`.

The server is the one of `scripts/postgres start` (postgresql://postgres@127.0.0.1:PGPORT,
default port 55432) unless `SAGA_PG_URL` names another one, e.g.
`postgresql://user:secret@db.example:5432/postgres` (the database in it is the one used to
create and drop the test databases; `postgres` when it names none). When no server answers,
tests using the fixture skip, or fail when `SAGA_REQUIRE_POSTGRES=1` (as in CI).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import warnings
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

CONNECT_TIMEOUT = 3.0
"""Seconds to wait for the server to answer."""

_T = TypeVar("_T")


def _required(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


def base_url() -> URL:
    """The server's admin URL: `SAGA_PG_URL`, else the one of `scripts/postgres`."""
    raw = os.environ.get("SAGA_PG_URL") or (
        f"postgresql://postgres@127.0.0.1:{os.environ.get('PGPORT') or 55432}/postgres"
    )
    url = make_url(raw)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"SAGA_PG_URL must be a postgresql:// URL, not {raw!r}")
    return url if url.database else url.set(database="postgres")


def _where(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _run(make: Callable[[], Awaitable[_T]]) -> _T:
    """`asyncio.run` the coroutine made by `make`, in a worker thread, so that it neither
    needs nor disturbs an event loop of the calling thread (pytest-asyncio's)."""

    async def main() -> _T:
        return await make()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-fixture") as pool:
        return pool.submit(asyncio.run, main()).result()


async def _connect(url: URL) -> Any:
    """An asyncpg connection to `url`'s database, within CONNECT_TIMEOUT seconds."""
    return await asyncio.wait_for(
        asyncpg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=CONNECT_TIMEOUT,
        ),
        timeout=CONNECT_TIMEOUT + 0.5,
    )


async def _check(url: URL) -> str:
    """The server's version string; raises if it does not answer."""
    conn = await _connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _drop_databases(url: URL, prefix: str) -> list[str]:
    """Drop every database whose name starts with `prefix`; return those that failed."""
    conn = await _connect(url)
    failed: list[str] = []
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", prefix
        )
        for (name,) in names:
            quoted = '"' + name.replace('"', '""') + '"'
            try:
                # end the connections a test may have leaked, then drop
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                await conn.execute(f"DROP DATABASE IF EXISTS {quoted}")
            except (asyncpg.PostgresError, OSError) as exc:
                failed.append(f"{name} ({_first_line(exc)})")
    finally:
        await conn.close()
    return failed


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database URL template for this test session, such as
    `postgresql://postgres@127.0.0.1:55432/t1a2b3c4d_{service}`.

    The engine replaces `{service}` with a service's name and creates that database when it
    is missing; the random prefix keeps sessions (and xdist workers) apart. The databases
    with this prefix are dropped when the session ends (best effort).
    """
    url = base_url()
    try:
        _run(lambda: _check(url))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = (
            f"no PostgreSQL at {_where(url)} ({_first_line(exc)}); "
            "start one: scripts/postgres start"
        )
        if _required("SAGA_REQUIRE_POSTGRES"):
            pytest.fail(f"SAGA_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)

    prefix = f"t{secrets.token_hex(4)}_"
    # SQLAlchemy would percent-encode braces in the database name: render a name without
    # them and append the placeholder to it (the random prefix occurs nowhere else).
    rendered = url.set(database=prefix).render_as_string(hide_password=False)
    template = rendered.replace(f"/{prefix}", f"/{prefix}{{service}}", 1)
    yield template

    try:
        failed = _run(lambda: _drop_databases(url, prefix))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        failed = [f"{prefix}* ({_first_line(exc)})"]
    if failed:
        warnings.warn(
            f"could not drop test databases on {_where(url)}: {', '.join(failed)}", stacklevel=1
        )
