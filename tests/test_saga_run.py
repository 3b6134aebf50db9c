"""`saga run` as users run it: a real OS process on a project generated from a registry
that is not checkout, killed with SIGKILL mid-run and restarted, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from saga_registry.codegen import write
from saga_registry.engine.bus import Bus, TopicSpec
from saga_registry.engine.buses import EmbeddedBus, KafkaBus
from saga_registry.engine.envelope import Envelope
from saga_registry.registry import load_registry
from tests.autoreact import payload
from tests.helpers import ROOT, TRIP

SAGA = [sys.executable, "-m", "saga_registry"]


def make_project(
    tmp_path: Path,
    *,
    name: str = "project",
    tag: str | None = None,
    edit: Callable[[str], str] | None = None,
) -> Path:
    """A project generated from the trip registry (changed by `edit`) in `tmp_path/name`,
    on topics no other test uses (those of `tag`: projects of one tag share them)."""
    root = tmp_path / name
    (root / "registry").mkdir(parents=True)
    tag = tag or uuid.uuid4().hex[:8]
    text = TRIP.read_text(encoding="utf-8").replace(
        "name: trips.booking.", f"name: t{tag}.trips.booking."
    )
    if edit is not None:
        text = edit(text)
    (root / "registry" / "saga.yaml").write_text(text, encoding="utf-8")
    reg = load_registry(root / "registry" / "saga.yaml")
    write(reg, root / "registry" / "saga.yaml", root, render=False)
    shutil.copy(ROOT / "tests" / "autoreact.py", root / "autoreact.py")
    for s in reg.services:
        (root / "handlers" / f"{s.module}.py").write_text(
            f"from autoreact import make\n\n{s.name} = make({s.name!r})\n"
        )
    return root


def start(
    root: Path,
    *args: str,
    bus: str = "embedded:bus.db",
    fail: str = "",
    hang: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": f"{root}{os.pathsep}{ROOT}",
        "SAGA_LOG_LEVEL": "WARNING",
        "SAGA_BUS": bus,
        "AUTOREACT_FAIL": fail,
        "AUTOREACT_HANG": hang,
    }
    return subprocess.Popen(
        [*SAGA, "run", "--db", "sqlite:///dbs/{service}.db", *args],
        cwd=root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def saga_cli(root: Path, bus: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "SAGA_BUS": bus}
    return subprocess.run(
        [*SAGA, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def bus_object(root: Path, bus: str) -> Bus:
    if bus.startswith("kafka://"):
        return KafkaBus(bus.removeprefix("kafka://"))
    return EmbeddedBus(root / "bus.db")


@pytest.fixture(params=["embedded", "kafka"])
def bus_url(request: pytest.FixtureRequest) -> str:
    if request.param == "kafka":
        return f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    return "embedded:bus.db"


async def place(root: Path, n: int, bus: str | Bus = "embedded:bus.db", start_at: int = 0) -> None:
    """Start `n` sagas (`trip-{start_at}` on) the way an outside producer would: plain JSON
    CloudEvents on the bus (a URL, or a bus not started yet), built from the registry
    alone (no generated code here)."""
    reg = load_registry(root / "registry" / "saga.yaml")
    first = next(e for s in reg.services for e in s.initiates)
    envs = [
        Envelope.new(
            type=first,
            source="tests",
            saga_id=f"trip-{i}",
            data=json.dumps(payload(reg, first, f"trip-{i}")).encode(),
        )
        for i in range(start_at, start_at + n)
    ]
    async with bus if isinstance(bus, Bus) else bus_object(root, bus) as b:
        await b.ensure_topics([TopicSpec(reg.events_topic.name, reg.events_topic.partitions)])
        await b.publish([e.to_record(reg.events_topic.name) for e in envs])


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


def test_saga_run_survives_kill_9_and_stops_cleanly(tmp_path: Path, bus_url: str) -> None:
    root = make_project(tmp_path)
    proc = start(root, bus=bus_url)
    try:
        reg = load_registry(root / "registry" / "saga.yaml")
        asyncio.run(place(root, 100, bus_url))
        last = reg.services[-1].name
        while not states(root, last):  # let it get going, then kill it mid-run
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        at_kill = states(root, last)
        terminal = set(reg.state_machine.terminal_states)
        assert sum(s in terminal for s in at_kill.values()) < 100, "killed too late to matter"
        proc = start(root, bus=bus_url)
        final = wait_terminal(root, 100)
        outcomes = {s.name: s.outcome for s in reg.state_machine.states}
        assert all(outcomes[s] == "success" for s in final.values()), final
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
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
        (
            ["--bus", "kafka://127.0.0.1:1", "--wait-for-bus", "0"],
            "error: cannot reach Kafka at 127.0.0.1:1",
        ),
        (["--bus", "carrier-pigeon://x"], "error: unknown bus URL 'carrier-pigeon://x'"),
        (["--db", "mysql://x/{service}"], "error: unsupported database 'mysql'"),
        (["--db", "sqlite:///one.db"], "has no {service}: each service owns its own database"),
        (["Nobody"], "error: unknown service 'Nobody'"),
        (["billing"], "error: unknown service 'billing' (did you mean 'Billing'?)"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    root = make_project(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    base = ["--bus", "embedded:bus.db", "--db", "sqlite:///dbs/{service}.db"]
    result = subprocess.run(
        [*SAGA, "run", *base, *args], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_run_keeps_trying_to_reach_the_bus_for_wait_for_bus_seconds(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    began = time.monotonic()
    result = subprocess.run(
        [
            *SAGA,
            "run",
            "--bus",
            "kafka://127.0.0.1:1",
            "--wait-for-bus",
            "4",
            "--db",
            "x/{service}",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - began >= 4
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "trying again for" in lines[0], result.stderr
    assert lines[-1].startswith("error: cannot reach Kafka at 127.0.0.1:1"), result.stderr


def test_sigterm_ends_a_service_within_its_bound_even_when_a_reaction_hangs(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path)
    proc = start(root, hang="Billing")
    try:
        asyncio.run(place(root, 3))
        while len(states(root, "Booking")) < 3:
            time.sleep(0.1)
        time.sleep(3)  # by now Billing is inside its reaction, for an hour
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 10, f"took {took:.1f} s after SIGTERM"
    assert "did not stop within" in err, err
    assert proc.returncode != 0


def test_missing_reaction_is_refused_at_start(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "handlers" / "billing.py").write_text(
        "from handlers.base.billing import BillingBase\n\n\nclass Billing(BillingBase):\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [*SAGA, "run", "--bus", "embedded:bus.db", "--db", "sqlite:///dbs/{service}.db"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: handler Billing in handlers.billing lacks reaction(s): on_"
    ), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dead_letters_are_listed_and_replayed_once_fixed(tmp_path: Path, bus_url: str) -> None:
    root = make_project(tmp_path)
    proc = start(root, bus=bus_url, fail="Billing")  # Billing is broken: its sagas park
    try:
        asyncio.run(place(root, 5, bus_url))
        deadline = time.monotonic() + 90
        listed = saga_cli(root, bus_url, "dlq", "list")
        while listed.stdout.count("\tBilling\t") < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
            listed = saga_cli(root, bus_url, "dlq", "list")
        assert listed.returncode == 0, listed.stderr
        rows = [line for line in listed.stdout.splitlines() if "\tBilling\t" in line]
        assert len(rows) == 5 and all("RuntimeError: Billing is broken" in r for r in rows)
        assert all("attempts=5" in r for r in rows)
        assert not any(
            s in set(load_registry(root / "registry/saga.yaml").state_machine.terminal_states)
            for s in states(root, "Notifications").values()
        )
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        proc = start(root, bus=bus_url)  # the fix is deployed
        replayed = saga_cli(root, bus_url, "dlq", "replay", "--service", "Billing")
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout.startswith("replayed 5 record(s)")
        final = wait_terminal(root, 5)
        reg = load_registry(root / "registry" / "saga.yaml")
        outcomes = {s.name: s.outcome for s in reg.state_machine.states}
        assert all(outcomes[s] == "success" for s in final.values()), final
    finally:
        if proc.poll() is None:
            proc.kill()
