"""A service refuses to start on a database that does not match its group's position on
the bus (emptied, restored from an older copy, another replica's, damaged), with one
line; `saga db adopt` accepts one on purpose. A database damaged during a run stops the
service with a non-zero exit, and nothing is dead-lettered for it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import insert

from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.custody import claim
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.errors import DatabaseDamaged
from saga_registry.engine.runner import ServiceRunner
from saga_registry.registry import load_registry
from tests.runtime_kit import FAST, ev, event, fresh_registry, publish, scripted
from tests.test_saga_run import (
    ROOT,
    SAGA,
    make_project,
    place,
    start,
    states,
    wait_terminal,
)

DBS = "sqlite:///dbs/{service}.db"


@pytest.fixture(params=["embedded", "kafka"])
def bus_url(request: pytest.FixtureRequest) -> str:
    if request.param == "kafka":
        return f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    return "embedded:bus.db"


def run_sagas(
    root: Path, bus_url: str, total: int, n: int, runs: tuple[tuple[str, ...], ...] = ((),)
) -> None:
    """Until `total` sagas have ended, `n` of them placed now, run one `saga run` process
    per entry of `runs` (its extra arguments; the default: every service on dbs/)."""
    procs = [start(root, *args, bus=bus_url) for args in runs]
    try:
        asyncio.run(place(root, n, bus_url, start_at=total - n))
        wait_terminal(root, total)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def saga(root: Path, bus_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "SAGA_BUS": bus_url}
    return subprocess.run(
        [*SAGA, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def refused(root: Path, bus_url: str, *args: str) -> str:
    """`saga run` must refuse at once: exit 1, one line; that line."""
    result = saga(root, bus_url, "run", "--db", DBS, *args)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_emptied_database_is_refused_until_adopted(tmp_path: Path, bus_url: str) -> None:
    root = make_project(tmp_path)
    run_sagas(root, bus_url, 3, 3)
    billing = root / "dbs" / "billing.db"
    os.truncate(billing, 0)
    line = refused(root, bus_url)
    assert "database sqlite:///dbs/billing.db of Billing is empty" in line
    assert "has already consumed" in line and "saga db adopt Billing" in line

    adopted = saga(root, bus_url, "db", "adopt", "Billing", "--db", DBS)
    assert adopted.returncode == 0, adopted.stderr
    assert "adopted" in adopted.stdout
    run_sagas(root, bus_url, 5, 2)  # it starts, and new sagas go through


def test_database_restored_from_an_older_copy_is_refused(tmp_path: Path, bus_url: str) -> None:
    root = make_project(tmp_path)
    run_sagas(root, bus_url, 2, 2)
    billing = root / "dbs" / "billing.db"
    shutil.copy(billing, tmp_path / "backup.db")
    run_sagas(root, bus_url, 4, 2)
    shutil.copy(tmp_path / "backup.db", billing)
    line = refused(root, bus_url)
    assert "of Billing is behind the bus: partition" in line, line


def test_a_replica_on_another_database_is_refused(tmp_path: Path, bus_url: str) -> None:
    root = make_project(tmp_path)
    run_sagas(root, bus_url, 2, 2)
    result = saga(root, bus_url, "run", "Billing", "--db", "sqlite:///elsewhere/{service}.db")
    assert result.returncode == 1, result.stderr
    assert "is empty, but group" in result.stderr  # a fresh database: nothing of the group's
    # Another database takes over on purpose and runs; the first one may not come back.
    shutil.copytree(root / "dbs", root / "copy")
    (root / "copy" / "billing.db").unlink()
    copy = "sqlite:///copy/{service}.db"
    adopted = saga(root, bus_url, "db", "adopt", "Billing", "--db", copy)
    assert adopted.returncode == 0, adopted.stderr
    reg = load_registry(root / "registry" / "saga.yaml")
    others = [s.name for s in reg.services if s.name != "Billing"]
    run_sagas(root, bus_url, 3, 1, runs=(("Billing", "--db", copy), tuple(others)))
    line = refused(root, bus_url, "Billing")
    assert "is not the one group" in line and "replicas of a service must share" in line


def _corrupt_table(path: Path, table: str) -> None:
    """Overwrite the root page of `table` in the SQLite file at `path` with garbage."""
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        page = root.fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xa5" * page_size)


async def test_a_database_damaged_during_a_run_stops_the_runner_and_dead_letters_nothing(
    tmp_path: Path,
) -> None:
    registry = fresh_registry()
    service = scripted("Inventory")
    path = tmp_path / "inventory.db"
    db = Database(database_url(f"sqlite:///{path}", "inventory"), service.metadata)
    await db.start()
    async with db.transaction() as conn:  # enough rows for the table to have its own pages
        await conn.execute(insert(service.calls), [{"event_id": "x" * 60, "event_type": "y"}] * 200)
    await db.stop()
    _corrupt_table(path, "calls")
    await db.start()
    bus: Bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    try:
        await bus.ensure_topics(
            [TopicSpec(registry.events_topic.name), TopicSpec(registry.dead_letter_topic.name)]
        )
        await publish(bus, registry, event("OrderCreated", "o1"))
        runner = ServiceRunner(registry, service, ev.EVENT_TYPES, db, bus, settings=FAST)
        with pytest.raises(DatabaseDamaged, match="database disk image is malformed"):
            async with asyncio.timeout(30):
                await runner.run(asyncio.Event())
        assert await bus.read_all(registry.dead_letter_topic.name) == []
        assert await bus.committed(runner.group, runner.topic) == {}
    finally:
        await bus.stop()
        await db.stop()


def test_half_truncated_database_with_its_wal_left_is_refused(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    run_sagas(root, "embedded:bus.db", 20, 20)  # a clean stop writes the log into the file
    proc = start(root, bus="embedded:bus.db")
    try:
        asyncio.run(place(root, 2, "embedded:bus.db", start_at=20))
        wait_terminal(root, 22)
    finally:
        proc.kill()  # SIGKILL: the write-ahead log stays beside the file
        proc.wait(timeout=30)
    billing = root / "dbs" / "billing.db"
    assert (root / "dbs" / "billing.db-wal").stat().st_size > 0
    os.truncate(billing, billing.stat().st_size // 2)
    line = refused(root, "embedded:bus.db")
    assert "billing.db of Billing is damaged: database disk image is malformed" in line, line


def test_a_replica_on_its_own_database_stops_when_given_anothers_partitions(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    bus_url = f"kafka://{kafka_bootstrap}"
    root = make_project(tmp_path)
    # Both start before anything is consumed, so both pass the check at start; how the
    # group then splits the partitions between them is up to Kafka.
    main = start(root, bus=bus_url)
    replica = start(root, "Billing", "--db", "sqlite:///replica/{service}.db", bus=bus_url)
    try:
        time.sleep(8)  # both joined the group
        asyncio.run(place(root, 24, bus_url))
        deadline = time.monotonic() + 60
        while replica.poll() is None and len(states(root, "Booking")) < 24:
            assert time.monotonic() < deadline, "the sagas did not start"
            time.sleep(0.2)
        time.sleep(5)
        if replica.poll() is not None:
            survivor = replica  # it joined late, and was given partitions main had read
        elif states(root, "Billing"):
            survivor = replica  # both read some partitions: main dies, the replica gets its
            main.kill()
        else:
            survivor = main  # the replica read them all: it dies, main gets them
            replica.kill()
        _, err = survivor.communicate(timeout=90)
    finally:
        for proc in (main, replica):
            if proc.poll() is None:
                proc.kill()
    assert survivor.returncode == 1, err
    assert "replicas of a service must share one database" in err.strip().splitlines()[-1]


async def test_processes_starting_together_on_a_fresh_database_share_one_identity(
    tmp_path: Path,
) -> None:
    """A service and a CLI command starting at once on a new database both find it without
    an identity; the one that writes second must take the first's, not add its own (a
    database with two identities refuses the next start as another replica's)."""
    url = database_url(f"sqlite:///{tmp_path}/oms.db", "OMS")
    db = Database(url)
    await db.start()
    other = sqlite3.connect(tmp_path / "oms.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the sibling process is in its own claim
    other.execute(
        "INSERT INTO saga_identity (id, service, created_at) VALUES ('sibling', 'OMS', 0)"
    )

    def commit_later() -> None:
        time.sleep(0.5)
        other.execute("COMMIT")

    bus = EmbeddedBus(str(tmp_path / "bus.db"))
    await bus.start()
    try:
        committer = asyncio.get_running_loop().run_in_executor(None, commit_later)
        owner = await claim(db, bus, "OMS", "g.OMS", "events")
        await committer
    finally:
        await bus.stop()
        await db.stop()
        other.close()
    check = sqlite3.connect(tmp_path / "oms.db")
    ids = [r[0] for r in check.execute("SELECT id FROM saga_identity")]
    assert ids == ["sibling"]
    assert owner.id == "sibling"
