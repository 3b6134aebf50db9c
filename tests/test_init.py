"""`saga init`: a new project works at once, and a saga of one's own is built from it.

The second registry (trip booking) goes the way a team's own saga would: `saga init`,
its registry in place of the example's, `saga codegen`, the outcome tests codegen
scaffolds failing until written, its own reactions, then its outcome tests passing on the
embedded log and on Kafka."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_harness import TRIP_HANDLERS, TRIP_TESTS, _dedent

ROOT = Path(__file__).resolve().parents[1]
TRIP = ROOT / "tests" / "registries" / "trip_booking.yaml"
# The event that starts a saga taking each outcome path of trip booking.
TRIP_STIMULI = {
    "confirmed": 'trip("t1")',
    "cancelled_after_flight_booking_failed": 'trip("t2", "NOF")',
    "cancelled_after_hotel_booking_failed": 'trip("t3", "NOH")',
    "cancelled_after_car_rental_failed": 'trip("t4", "NOC")',
    "cancelled_after_payment_declined": 'trip("t5", "VAN")',
}


# Start a project's services as `saga run` does, then list which renderers got loaded.
RUNTIME_ONLY = """
import asyncio, sys
import saga_registry.cli.main
from saga_registry.engine.app import Application
from saga_registry.engine.config import Settings

async def go():
    app = Application(Settings(bus="embedded:.saga/bus.db"))
    await app.start()
    print(",".join(s.runner.name for s in app.services))
    await app.stop()

asyncio.run(go())
print(",".join(m for m in ("jinja2", "graphviz") if m in sys.modules) or "none")
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SAGA_REGISTRY", "PYTEST_ADDOPTS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def saga(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saga_registry", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_init_makes_a_blank_project_that_validates_checks_and_passes(tmp_path: Path) -> None:
    # Run from this repository, as CI does: its own *.egg-info must not hide where the
    # engine was installed from.
    project = tmp_path / "shop"
    made = saga("init", str(project), cwd=ROOT)
    assert made.returncode == 0, made.stderr
    for path in (
        "registry/saga.yaml",
        "handlers/events.py",
        "handlers/base/billing.py",
        "handlers/billing.py",
        "tests/test_outcomes.py",
        "docs/diagrams/state_machine.dot",
        "README.md",
        "pyproject.toml",
    ):
        assert (project / path).is_file(), path
    assert saga("validate", cwd=project).returncode == 0
    check = saga("codegen", "--check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    # Modules of the project's own named like the engine's parts: nothing imports them.
    for name in ("engine", "codegen", "registry_tools", "bench", "chaos"):
        (project / f"{name}.py").write_text(f"raise ImportError('the project\\'s own {name}')\n")
    tests = pytest_in(project)
    assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout[-3000:]
    # The runtime never loads the generator's renderers.
    loaded = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["Signup,Billing,Accounts", "none"], loaded.stdout
    # The project depends on this engine, where it was installed from.
    pyproject = (project / "pyproject.toml").read_text()
    # (These tests run on an engine installed from its folder: pip recorded where.)
    assert f'dependencies = ["saga-registry @ {ROOT.as_uri()}"]' in pyproject, pyproject
    assert f'otel = ["saga-registry[otel] @ {ROOT.as_uri()}"]' in pyproject, pyproject


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    made = saga("init", "mine", cwd=tmp_path)
    assert made.returncode == 1
    assert made.stderr.strip().splitlines() == [
        "error: mine is not empty: saga init only fills a new folder"
    ]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_init_checkout_copies_this_repository_s_example_with_its_tests(tmp_path: Path) -> None:
    made = saga("init", "checkout", "--example", "checkout", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "checkout"
    assert (project / "registry" / "saga.yaml").read_bytes() == (
        ROOT / "registry" / "saga.yaml"
    ).read_bytes()
    assert (project / "handlers" / "payment.py").read_bytes() == (
        ROOT / "handlers" / "payment.py"
    ).read_bytes()
    check = saga("codegen", "--check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    # Its own commands come with it, and only inside it.
    assert "demo" in saga("--help", cwd=project).stdout
    assert "demo" not in saga("--help", cwd=tmp_path).stdout
    tests = pytest_in(project)
    assert tests.returncode == 0 and "4 passed" in tests.stdout, tests.stdout[-3000:]


@pytest.fixture
def trips(tmp_path: Path) -> Path:
    """Trip booking, made the way a team makes its own saga, up to its outcome tests."""
    assert saga("init", "trips", cwd=tmp_path).returncode == 0
    project = tmp_path / "trips"
    # The example's own saga goes; the team's registry comes in.
    for owned in ("signup.py", "billing.py", "accounts.py"):
        (project / "handlers" / owned).unlink()
    (project / "tests" / "test_outcomes.py").unlink()
    shutil.copy(TRIP, project / "registry" / "saga.yaml")
    generated = saga("codegen", cwd=project)
    assert generated.returncode == 0, generated.stderr
    assert "created tests/test_outcomes.py" in generated.stdout, generated.stdout
    assert not (project / "handlers" / "base" / "signup.py").exists()
    return project


def test_a_second_saga_built_through_init_passes_its_outcome_tests_on_both_buses(
    trips: Path, kafka_bootstrap: str
) -> None:
    # Unwritten reactions: neither the engine nor the harness runs them; both name them.
    refused = saga("run", "--wait-for-bus", "0", cwd=trips)
    assert refused.returncode == 1
    flights = "handler Flights in handlers.flights has reaction(s) still the generated stub"
    assert len(refused.stderr.splitlines()) == 6 and flights in refused.stderr, refused.stderr
    stubs = pytest_in(trips)
    assert stubs.returncode == 1 and flights in stubs.stdout, stubs.stdout
    # The team writes its reactions; the scaffolded outcome tests then fail, each saying
    # that its stimulus is not written yet.
    for module, text in TRIP_HANDLERS.items():
        (trips / "handlers" / module).write_text(_dedent(text))
    before = pytest_in(trips)
    assert before.returncode == 1
    # (pytest may print each message twice: in the failure and in its summary line)
    unwritten = set(re.findall(r"outcome test '(\w+)' is not written yet", before.stdout))
    assert unwritten == set(TRIP_STIMULI), before.stdout[-3000:]
    outcomes = trips / "tests" / "test_outcomes.py"
    text = outcomes.read_text()
    for name, stimulus in TRIP_STIMULI.items():
        text, n = re.subn(
            rf"(async def test_{name}\(saga: SagaHarness\) -> None:\n(?:    .*\n)*?)"
            rf"    stimulus = None.*\n",
            rf"\1    stimulus = {stimulus}\n",
            text,
        )
        assert n == 1, name
    outcomes.write_text(text + "\n\n" + TRIP_TESTS)
    embedded = pytest_in(trips)
    assert embedded.returncode == 0 and "5 passed" in embedded.stdout, embedded.stdout[-4000:]
    on_kafka = pytest_in(trips, f"--saga-bus=kafka://{kafka_bootstrap}")
    assert on_kafka.returncode == 0 and "5 passed" in on_kafka.stdout, on_kafka.stdout[-4000:]
