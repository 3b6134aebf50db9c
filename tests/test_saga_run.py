"""`saga run` as users run it: a real OS process on a project generated from a registry
that is not checkout, killed with SIGKILL mid-run and restarted, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codegen import load_registry, write
from engine.buses import EmbeddedBus
from engine.envelope import Envelope
from tests.helpers import ROOT, TRIP

SAGA = [sys.executable, "-m", "engine.cli"]


def make_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "registry").mkdir(parents=True)
    shutil.copy(TRIP, root / "registry" / "saga.yaml")
    reg = load_registry(root / "registry" / "saga.yaml")
    write(reg, root / "registry" / "saga.yaml", root, render=False)
    shutil.copy(ROOT / "tests" / "autoreact.py", root / "autoreact.py")
    for s in reg.services:
        (root / "handlers" / f"{s.module}.py").write_text(
            f"from autoreact import make\n\n{s.name} = make({s.name!r})\n"
        )
    return root


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "SAGA_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [*SAGA, "run", "--bus", "embedded:bus.db", "--db", "sqlite:///dbs/{service}.db", *args],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


async def place(root: Path, n: int) -> None:
    """Start `n` sagas the way an outside producer would: CloudEvents on the bus."""
    reg = load_registry(root / "registry" / "saga.yaml")
    (first,) = [e for s in reg.services for e in s.initiates][:1]
    sys.path.insert(0, str(root))
    try:
        import autoreact  # the project's copy, reading the project's registry

        import handlers.events as events
    finally:
        sys.path.remove(str(root))
    cls = events.EVENT_TYPES[first]
    envs = [
        Envelope.new(type=first, source="tests", saga_id=f"trip-{i}",
                     data=cls.from_dict(autoreact.payload(first, f"trip-{i}")).to_json())
        for i in range(n)
    ]
    async with EmbeddedBus(root / "bus.db") as bus:
        await bus.publish([e.to_record(reg.events_topic.name) for e in envs])


def states(root: Path, service: str) -> dict[str, str]:
    path = root / "dbs" / f"{service.lower()}.db"
    if not path.exists():
        return {}
    with sqlite3.connect(path, timeout=30) as conn:
        try:
            return dict(conn.execute("SELECT saga_id, state FROM saga_state").fetchall())
        except sqlite3.OperationalError:
            return {}


def wait_terminal(root: Path, n: int, timeout: float = 90.0) -> dict[str, str]:
    reg = load_registry(root / "registry" / "saga.yaml")
    terminal = set(reg.state_machine.terminal_states)
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        last = states(root, reg.services[-1].name)
        if len(last) == n and all(s in terminal for s in last.values()):
            return last
        time.sleep(0.2)
    raise AssertionError(f"sagas not terminal after {timeout}s: {last}")


@pytest.fixture(autouse=True)
def _sys_modules_guard() -> object:
    before = set(sys.modules)
    yield None
    for name in set(sys.modules) - before:
        if name == "autoreact" or name.startswith("handlers"):
            del sys.modules[name]


def test_saga_run_survives_kill_9_and_stops_cleanly(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    # Lose the project's handlers from this process's import cache after placing.
    for name in [m for m in sys.modules if m.startswith("handlers")]:
        del sys.modules[name]
    proc = start(root)
    try:
        reg = load_registry(root / "registry" / "saga.yaml")
        asyncio.run(place(root, 100))
        last = reg.services[-1].name
        while not states(root, last):  # let it get going, then kill it mid-run
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        at_kill = states(root, last)
        terminal = set(reg.state_machine.terminal_states)
        assert sum(s in terminal for s in at_kill.values()) < 100, "killed too late to matter"
        proc = start(root)
        final = wait_terminal(root, 100)
        outcomes = {s.name: s.outcome for s in reg.state_machine.states}
        assert all(outcomes[s] == "success" for s in final.values()), final
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped cleanly" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing was applied twice: every service emitted each event type at most once a saga.
    for s in reg.services:
        with sqlite3.connect(root / "dbs" / f"{s.name.lower()}.db") as conn:
            dupes = conn.execute(
                "SELECT count(*) FROM (SELECT i.saga_id, i.event_type, count(*) c "
                "FROM saga_inbox i GROUP BY i.saga_id, i.event_type HAVING c > 1)"
            ).fetchone()[0]
            emitted = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM saga_outbox")
            total, distinct = emitted.fetchone()
        assert dupes == 0, s.name
        assert total == distinct, s.name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bus", "kafka://127.0.0.1:1"], "error: cannot reach Kafka at 127.0.0.1:1"),
        (["--bus", "carrier-pigeon://x"], "error: unknown bus URL 'carrier-pigeon://x'"),
        (["--db", "mysql://x/{service}"], "error: unsupported database 'mysql'"),
        (["--db", "sqlite:///one.db"], "has no {service}: each service owns its own database"),
        (["Nobody"], "error: unknown service 'Nobody'"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    root = make_project(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    base = ["--bus", "embedded:bus.db", "--db", "sqlite:///dbs/{service}.db"]
    result = subprocess.run([*SAGA, "run", *base, *args], cwd=root, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_missing_reaction_is_refused_at_start(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "handlers" / "billing.py").write_text(
        "from handlers.base.billing import BillingBase\n\n\nclass Billing(BillingBase):\n"
        "    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    result = subprocess.run([*SAGA, "run", "--bus", "embedded:bus.db", "--db",
                             "sqlite:///dbs/{service}.db"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: handler Billing in handlers.billing lacks "
                                    "reaction(s): on_"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
