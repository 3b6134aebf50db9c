"""The checkout's services as OS processes, and a private Kafka broker: started, killed
with SIGKILL at any moment, restarted."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chaos.errors import ChaosError

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServiceProcesses:
    """One `saga run NAME` process per service, each logging to `<logs>/<name>.log`.

    A process that exits on its own (not killed here) is a crash: it is counted in
    `crashes` and started again by `revive`, so a test sees it instead of hanging."""

    names: list[str]
    env: dict[str, str]
    logs: Path
    options: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    crashes: list[tuple[str, int]] = field(default_factory=list)
    _files: dict[str, IO[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """Start `name` (appending to its log)."""
        if name not in self._files:
            self._files[name] = (self.logs / f"{name}.log").open("ab")
        args = [sys.executable, "-m", "saga_registry", "run", name]
        for option in self.options:
            args += ["--set", option]
        # A log file, not a pipe: a service blocked on a full pipe would never stop.
        self.procs[name] = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self._files[name], stderr=subprocess.STDOUT
        )

    def start_all(self) -> None:
        """Start every service."""
        for name in self.names:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL `name` wherever it is (mid-transaction included) and reap it."""
        proc = self.procs[name]
        self._note_crash(name)  # it may have died on its own meanwhile
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def revive(self) -> None:
        """Start again any service that exited on its own, counting it as a crash."""
        for name in list(self.procs):
            if self._note_crash(name):
                self.start(name)

    def _note_crash(self, name: str) -> bool:
        """Count `name` as crashed if it exited, and not by our SIGKILL."""
        code = self.procs[name].poll()
        if code is None or code == -signal.SIGKILL:
            return False
        self.crashes.append((name, code))
        return True

    def stop_all(self, timeout_s: float = 60.0) -> dict[str, int]:
        """SIGTERM every service, wait for each; their exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        for f in self._files.values():
            f.close()
        self._files.clear()
        return codes

    def tail(self, name: str, chars: int = 2000) -> str:
        """The end of `name`'s log."""
        path = self.logs / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""


@dataclass
class Broker:
    """A Kafka broker of its own (scripts/kafka with a private state dir and port), so
    restarting it disturbs nobody else."""

    state_dir: Path
    port: int = field(default_factory=lambda: free_port())
    controller_port: int = field(default_factory=lambda: free_port())

    @property
    def bootstrap(self) -> str:
        """`host:port` of the broker."""
        return f"127.0.0.1:{self.port}"

    def _script(
        self, command: str, timeout_s: float = 300.0, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KAFKA_STATE_DIR": str(self.state_dir),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            **extra,
        }
        try:
            return subprocess.run(
                [str(ROOT / "scripts" / "kafka"), command],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChaosError(f"scripts/kafka {command} for the chaos broker: {exc}") from None

    def start(self, max_wait_s: float = 300.0) -> float:
        """Start (fetching Kafka on first use) and wait up to `max_wait_s` seconds for it to
        answer; the seconds it took. Raises `ChaosError` if it did not answer in time or
        exited: the process is then left as scripts/kafka leaves it (a slow broker keeps
        coming up; `stop` ends it)."""
        began = time.monotonic()
        done = self._script(
            "start",
            # Room for a first download from Maven Central besides the wait itself.
            timeout_s=max_wait_s + 300,
            KAFKA_START_MAX=str(max(1, math.ceil(max_wait_s))),
        )
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if ln.startswith("kafka: ERROR")]
            last = (errors or done.stderr.strip().splitlines() or ["no output"])[0]
            raise ChaosError(f"the chaos broker on {self.bootstrap} did not start: {last}")
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL the broker (the page cache keeps what it acknowledged)."""
        pidfile = self.state_dir / "kafka.pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)
            except (ValueError, ProcessLookupError):
                pass

    def stop(self) -> None:
        """Stop the broker cleanly."""
        self._script("stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the script's shell is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
