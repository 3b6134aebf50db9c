"""Test a project's own saga with pytest: the `saga` fixture (a `SagaHarness`) runs every
service of the registry in the test's process on a throwaway bus and databases.

    async def test_trip_is_confirmed(saga):
        run = await saga.start(TripRequested(...))
        result = await run.wait()
        assert result.events == ["TripRequested", "FlightBooked", ...]

The plugin (`saga_registry.testing.plugin`) is registered with pytest by installing
saga-registry; it needs pytest-asyncio. The names below load on first use, so that pytest
starting in any project of the environment does not import the engine."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga_registry.testing.clock import FakeClock
    from saga_registry.testing.failures import Failure, InjectedFailure
    from saga_registry.testing.harness import SagaHarness, SagaRun
    from saga_registry.testing.result import SagaResult

_HOME = {
    "FakeClock": "clock",
    "Failure": "failures",
    "InjectedFailure": "failures",
    "SagaHarness": "harness",
    "SagaResult": "result",
    "SagaRun": "harness",
}

__all__ = ["Failure", "FakeClock", "InjectedFailure", "SagaHarness", "SagaResult", "SagaRun"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
