"""Test a project's own saga with pytest: the `saga` fixture (a `SagaHarness`) runs every
service of the registry in the test's process on a throwaway bus and databases.

    async def test_trip_is_confirmed(saga):
        run = await saga.start(TripRequested(...))
        result = await run.wait()
        assert result.events == ["TripRequested", "FlightBooked", ...]

The plugin (`saga_registry.testing.plugin`) is registered with pytest by installing
saga-registry; it needs pytest-asyncio."""

from saga_registry.testing.clock import FakeClock
from saga_registry.testing.failures import Failure, InjectedFailure
from saga_registry.testing.harness import SagaHarness, SagaRun
from saga_registry.testing.result import SagaResult

__all__ = ["Failure", "FakeClock", "InjectedFailure", "SagaHarness", "SagaResult", "SagaRun"]
