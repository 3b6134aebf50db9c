"""`scripts/kafka start` never stops a broker: it waits while the broker's log shows
progress, gives up after KAFKA_START_TIMEOUT seconds without any (or KAFKA_START_MAX in
all), and then leaves the process running for `status` and `stop`.

Each test has a state dir and ports of its own (KAFKA_STATE_DIR, KAFKA_PORT): the shared
broker is never touched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import kafka_api_versions
from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "kafka"
StartFake = Callable[[float], subprocess.Popen[bytes]]

# Stands for a broker that is up but not answering yet: named like one (`kafka.Kafka` on
# its command line, which the script checks), it appends to the broker's log every
# 0.2 s for `growing` seconds, then stays silent until killed.
_FAKE = """
import sys, time
log, growing = sys.argv[2], float(sys.argv[3])
end = time.monotonic() + growing
while True:
    if time.monotonic() < end:
        with open(log, "a") as f:
            f.write("INFO still starting\\n")
    time.sleep(0.2)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(state: Path, **extra: str) -> dict[str, str]:
    port = free_port()
    return {
        **os.environ,
        "KAFKA_STATE_DIR": str(state),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        **extra,
    }


def _script(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=600
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def fake_broker(tmp_path: Path) -> Iterator[tuple[Path, StartFake]]:
    """A fake broker process in its own state dir, recorded in the pid file."""
    state = tmp_path / "kafka"
    state.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def start(growing: float) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _FAKE, "kafka.Kafka", str(state / "kafka.log"), str(growing)]
        )
        (state / "kafka.pid").write_text(f"{proc.pid}\n")
        procs.append(proc)
        return proc

    yield state, start
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_broker_whose_log_grows_is_waited_for_past_the_timeout(
    java: None, fake_broker: tuple[Path, StartFake]
) -> None:
    state, start = fake_broker
    proc = start(5.0)
    began = time.monotonic()
    done = _script(_env(state, KAFKA_START_TIMEOUT="1"), "start")
    waited = time.monotonic() - began
    assert done.returncode == 1, done.stdout + done.stderr
    # It waited through the 5 s of progress, then gave up 1 s after the log fell silent.
    assert 5.0 <= waited < 30, (waited, done.stderr)
    assert "no progress in its log for 1 s" in done.stderr
    assert proc.poll() is None, "a broker it did not start is never stopped"
    assert f"left running (pid {proc.pid})" in done.stderr


def test_the_wait_ends_at_kafka_start_max_and_leaves_the_broker_running(
    java: None, fake_broker: tuple[Path, StartFake]
) -> None:
    state, start = fake_broker
    proc = start(600.0)  # progress all along
    began = time.monotonic()
    done = _script(_env(state, KAFKA_START_TIMEOUT="1", KAFKA_START_MAX="3"), "start")
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - began < 30
    assert "did not answer" in done.stderr and "within 3 s" in done.stderr
    assert proc.poll() is None


def test_a_real_broker_slower_than_the_timeout_is_not_killed(java: None, tmp_path: Path) -> None:
    # KAFKA_START_TIMEOUT of 1 s: far less than a broker takes to come up. It used to be
    # killed when the timeout ran out; now `start` waits while its log grows, and if it
    # gives up anyway, the broker stays.
    env = _env(tmp_path / "kafka", KAFKA_START_TIMEOUT="1")
    try:
        done = _script(env, "start")
        pid = int((tmp_path / "kafka" / "kafka.pid").read_text())
        assert _alive(pid), done.stdout + done.stderr
        if done.returncode != 0:
            assert f"left running (pid {pid})" in done.stderr, done.stderr
        deadline = time.monotonic() + 180
        answered = 0
        while not answered and time.monotonic() < deadline:
            try:
                answered = kafka_api_versions("127.0.0.1", int(env["KAFKA_PORT"]))
            except (OSError, ValueError):  # not listening, or not a broker yet
                time.sleep(1)
        assert answered > 40, "the broker came up"
        again = _script(env, "start")
        assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    finally:
        stopped = _script(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
