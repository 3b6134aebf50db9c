"""Where a project's saga lives, as pytest sees it.

The project root is pytest's rootdir; the registry is `registry/saga.yaml` there unless
the ini option `saga_registry` or the environment variable SAGA_REGISTRY (which wins)
names another; the package of generated and owned code is the ini option `saga_package`
(default `handlers`), imported from the project root.

Light on purpose (no engine import): the plugin reads it at every pytest start."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_REGISTRY = "registry/saga.yaml"
DEFAULT_PACKAGE = "handlers"


@dataclass(frozen=True, slots=True)
class Project:
    """A project under test."""

    root: Path
    registry: Path
    package: str
    bus: str | None
    """`--saga-bus`: None for a fresh embedded log per test."""


def project_of(config: pytest.Config) -> Project:
    """The project the running pytest session tests."""
    root = Path(config.rootpath)
    name = os.environ.get("SAGA_REGISTRY") or str(config.getini("saga_registry") or "")
    registry = root / (name or DEFAULT_REGISTRY)
    package = str(config.getini("saga_package") or DEFAULT_PACKAGE)
    bus = config.getoption("saga_bus", default=None)
    return Project(root, registry, package, str(bus) if bus else None)


def importable(project: Project) -> None:
    """Put the project root first on sys.path, so that `import handlers` finds the
    project's package however pytest was run (pytest itself only adds `tests/` for a
    project whose tests/ has no __init__.py)."""
    root = str(project.root)
    if root not in sys.path:
        sys.path.insert(0, root)
