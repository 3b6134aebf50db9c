"""Databases as several processes meet them: a service and a CLI command starting at the
same moment on a fresh database must both come up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

_START = """
import asyncio, sys, time
from saga_registry.engine.database import Database, database_url
from sqlalchemy import Column, MetaData, String, Table

metadata = MetaData()
Table("orders", metadata, Column("order_id", String(64), primary_key=True))

async def main(url: str, at: float) -> None:
    while time.time() < at:
        time.sleep(0.0005)
    db = Database(database_url(url, "OMS"), metadata)
    await db.start()
    await db.stop()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        template: str = request.getfixturevalue("pg_url")
        return template.replace("{service}", f"race{time.time_ns()}_{{service}}")
    return f"sqlite:///{tmp_path}/{{service}}.db"


def test_processes_starting_together_on_a_fresh_database_all_come_up(url: str) -> None:
    # Without care they race to create the same tables (and, on PostgreSQL, the same
    # database), and all but one fail with "already exists".
    at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START, url, str(at)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e.strip()[-300:] for e in errors if e]
