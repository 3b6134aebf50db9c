"""The registry and settings one test's harness runs with."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from saga_registry.engine.config import Settings
from saga_registry.engine.runner import RunnerSettings
from saga_registry.registry import CodegenError, load_registry
from saga_registry.registry.model import Registry, Topic
from saga_registry.testing.project import Project, importable

FAST_RUNNER = RunnerSettings(backoff_s=0.01, backoff_max_s=0.05, poll_timeout_s=0.05)
"""Retries a few milliseconds apart and short polls: a saga of a test ends in well under a
second. `max_attempts` keeps the engine's default."""


def load_project_registry(project: Project) -> Registry:
    """The project's registry, its package importable; fails the test on a mistake."""
    if not project.registry.is_file():
        pytest.fail(
            f"saga fixture: no registry at {project.registry}: set the ini option "
            "`saga_registry` or SAGA_REGISTRY to its path (relative to the project root)",
            pytrace=False,
        )
    importable(project)
    try:
        return load_registry(project.registry)
    except CodegenError as exc:
        pytest.fail(
            f"saga fixture: registry {project.registry}: {str(exc).splitlines()[0]}",
            pytrace=False,
        )


def harness_settings(
    project: Project, registry: Registry, state: Path
) -> tuple[Settings, Registry]:
    """Settings for one test whose files go under `state`, and the registry to run: on
    Kafka, with topics and a name (consumer groups) of the test's own."""
    if project.bus is None:
        bus = f"embedded:{state / 'bus.db'}"
    else:
        bus = project.bus
        run = uuid.uuid4().hex[:10]
        registry = dataclasses.replace(
            registry,
            name=f"{registry.name}_test_{run}",
            events_topic=Topic(
                f"{registry.events_topic.name}.test-{run}", registry.events_topic.partitions
            ),
            dead_letter_topic=Topic(
                f"{registry.dead_letter_topic.name}.test-{run}",
                registry.dead_letter_topic.partitions,
            ),
        )
    settings = Settings(
        registry=str(project.registry),
        bus=bus,
        db=f"sqlite:///{state}/{{service}}.db",
        package=project.package,
        runner=FAST_RUNNER,
    )
    return settings, registry
