"""The pytest plugin of `saga_registry.testing` (entry point `pytest11`): the `saga`
fixture, the ini options `saga_registry` and `saga_package`, and `--saga-bus`.

The fixture is asynchronous: it needs pytest-asyncio, and runs in the test's own event
loop (function scope). With `asyncio_mode = "auto"` a test only has to be `async def`;
in strict mode, mark it `@pytest.mark.asyncio`.

pytest loads this plugin in every project of an environment that has saga-registry: it
imports the engine only when a test asks for the fixture."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from saga_registry.testing.project import DEFAULT_PACKAGE, DEFAULT_REGISTRY, importable, project_of

if TYPE_CHECKING:
    from saga_registry.testing.harness import SagaHarness


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "saga_registry",
        f"The saga registry the `saga` fixture runs, relative to the rootdir "
        f"(default {DEFAULT_REGISTRY}; the environment variable SAGA_REGISTRY wins).",
        default="",
    )
    parser.addini(
        "saga_package",
        f"The package of the project's generated and owned saga code (default {DEFAULT_PACKAGE}).",
        default=DEFAULT_PACKAGE,
    )
    parser.getgroup("saga").addoption(
        "--saga-bus",
        dest="saga_bus",
        default=None,
        metavar="URL",
        help="Run the `saga` fixture on this bus (e.g. kafka://127.0.0.1:9092), with fresh "
        "topics per test, instead of a throwaway embedded log.",
    )


def pytest_configure(config: pytest.Config) -> None:
    """A saga project's test modules import its package at their top, before any fixture
    runs: make it importable at the start of the session (only where the rootdir holds
    the project's registry, so that other projects' sessions are left alone)."""
    project = project_of(config)
    if project.registry.is_file():
        importable(project)


async def _harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SagaHarness]:
    """Every service of the project's registry, running for one test on a throwaway
    embedded log (or `--saga-bus`, with fresh topics) and throwaway SQLite databases: a
    `saga_registry.testing.SagaHarness`. Async: needs pytest-asyncio (auto mode, or
    `@pytest.mark.asyncio` in strict mode)."""
    from saga_registry.testing.harness import SagaHarness
    from saga_registry.testing.runtime import harness_settings, load_project_registry

    project = project_of(request.config)
    registry = load_project_registry(project)
    settings, registry = harness_settings(project, registry, tmp_path_factory.mktemp("saga"))
    harness = SagaHarness(settings, registry)
    await harness.open()
    try:
        yield harness
    finally:
        await harness.close()


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    saga = pytest_asyncio.fixture(_harness, name="saga", loop_scope="function")

else:

    @pytest.fixture(name="saga")
    def _no_asyncio() -> None:
        pytest.fail(
            "the saga fixture needs pytest-asyncio: pip install pytest-asyncio",
            pytrace=False,
        )
