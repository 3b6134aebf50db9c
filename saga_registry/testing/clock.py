"""A test clock for deadlines: real time plus an offset the test advances.

Timers are armed with the real `time.time()` (`due_at = now + within_s`), so a deadline is
due at fake time `real now + offset` once the offset covers its wait; the harness fires
it then, without sleeping."""

from __future__ import annotations

import time

from saga_registry.engine.runner import ServiceRunner
from saga_registry.engine.timers import DeadlineTimers


class FakeClock:
    """Real time shifted by `offset` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """The fake time: the real time plus every `advance` so far."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the fake time forward by `seconds` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock back ({seconds} s)")
        self.offset += seconds


class ClockTimers(DeadlineTimers):
    """`DeadlineTimers` that read the fake clock: the application's own timer loop then
    agrees with `advance` instead of firing by the real clock alone."""

    def __init__(self, runner: ServiceRunner, clock: FakeClock, *, poll_s: float = 0.05) -> None:
        super().__init__(runner, poll_s=poll_s)
        self.clock = clock

    async def fire_due(self, now: float | None = None) -> int:
        """Fire every timer due at `now` (default: the fake clock's time)."""
        return await super().fire_due(self.clock.now() if now is None else now)
