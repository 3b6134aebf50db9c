"""CPU time and peak resident memory of the service processes, sampled with psutil."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """What one process used: CPU seconds (user + system) and its peak RSS."""

    cpu_s: float
    peak_rss_mb: float
    rss_growth_mb: float
    """RSS at the end minus RSS at `mark` (after warm-up): what the measured run added."""


class ProcessSampler:
    """Samples the RSS of named processes every `interval_s` while running (`start` /
    `stop`); `stats()` reads their CPU times, so call it before the processes exit."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._peak = dict.fromkeys(pids, 0)
        self._cpu_at_start: dict[str, float] = {}
        self._rss_at_start: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin sampling."""
        self._sample()
        self._task = asyncio.create_task(self._run(), name="bench.sampler")

    def mark(self) -> None:
        """Count CPU time from now on (start-up and warm-up are then left out)."""
        self._cpu_at_start = {name: _cpu(p) for name, p in self._procs.items()}
        self._rss_at_start = {name: p.memory_info().rss for name, p in self._procs.items()}

    async def stop(self) -> None:
        """Stop sampling (one last sample first)."""
        self._sample()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def stats(self) -> dict[str, ProcessStats]:
        """Per process: CPU seconds since `mark`, the peak RSS seen, and the RSS growth
        since `mark`, in MB."""
        self._sample()
        return {
            name: ProcessStats(
                cpu_s=_cpu(p) - self._cpu_at_start.get(name, 0.0),
                peak_rss_mb=self._peak[name] / 2**20,
                rss_growth_mb=(p.memory_info().rss - self._rss_at_start.get(name, 0)) / 2**20,
            )
            for name, p in self._procs.items()
        }

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._sample()

    def _sample(self) -> None:
        for name, p in self._procs.items():
            # A process that already exited keeps the peak it reached.
            with contextlib.suppress(psutil.Error):
                self._peak[name] = max(self._peak[name], p.memory_info().rss)


def _cpu(p: psutil.Process) -> float:
    times = p.cpu_times()
    return float(times.user + times.system)


def broker_pid(bootstrap: str) -> int | None:
    """The pid of the process listening on `bootstrap`'s port on this machine, if one is
    found (a broker elsewhere, or a system that hides sockets, gives None)."""
    host, _, port = bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "") or not port.isdigit():
        return None
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == int(port):
                return conn.pid
    return None
