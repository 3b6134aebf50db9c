"""What `pip install` puts in a user's environment: the engine, nothing of the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import ROOT


def test_the_wheel_holds_the_engine_alone_with_its_data(tmp_path: Path) -> None:
    # Built from a copy of the tracked files: a build leaves build/ behind in its source.
    source = tmp_path / "source"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to((ROOT / name).readlink())
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("saga_registry-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"saga_registry", next(t for t in top if t.endswith(".dist-info"))}, top
    for needed in (
        "saga_registry/py.typed",
        "saga_registry/registry/registry.schema.json",
        "saga_registry/codegen/templates/service_base.py.jinja",
        "saga_registry/scaffold/blank/registry/saga.yaml",
        "saga_registry/scaffold/blank/tests/test_outcomes.py",
        "saga_registry/scaffold/common/pyproject.toml.tmpl",
        "saga_registry/scaffold/samples/blank.json",
        # The checkout example is this repository's own project, copied in at build time.
        "saga_registry/scaffold/checkout/registry/saga.yaml",
        "saga_registry/scaffold/checkout/handlers/payment.py",
        "saga_registry/scaffold/checkout/tests/test_outcomes.py",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "saga = saga_registry.cli.main:main" in text
    assert "saga_registry = saga_registry.testing.plugin" in text
