"""One-line command errors a new user meets first: `saga start` names every field its
payload misses or gets wrong, and a command run outside the project says where the
registry was looked for and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAGA = [sys.executable, "-m", "saga_registry.cli.main"]


def _saga(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    return subprocess.run(
        [*SAGA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project `saga init` makes (its registry, generated code and handlers)."""
    root = tmp_path_factory.mktemp("init")
    made = _saga(root, "init", "signup")
    assert made.returncode == 0, made.stderr
    return root / "signup"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            '{"signup_id": "x"}',
            "error: invalid SignupRequested payload: email, plan, amount: Field required",
        ),
        (
            '{"signup_id": "x", "email": "a@b.c", "plan": "gold", "amount": "3"}',
            "error: invalid SignupRequested payload: plan: Input should be 'basic' or 'pro'; "
            "amount: Input should be a valid integer",
        ),
    ],
)
def test_start_names_every_bad_field_in_one_line(project: Path, data: str, message: str) -> None:
    done = _saga(project, "start", "SignupRequested", "--data", data)
    assert done.returncode == 1
    assert done.stderr.strip() == message, done.stderr
    assert not (project / ".saga").exists(), "nothing is started"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["validate"],
            "error: registry/saga.yaml: no such file (run saga in your project's folder, "
            "or give the registry's PATH)",
        ),
        (
            ["codegen"],
            "error: registry/saga.yaml: no such file (run saga in your project's folder, "
            "or give --registry PATH)",
        ),
        (
            ["sagas"],
            "error: registry/saga.yaml: no such file (run saga in your project's folder, "
            "or give --registry PATH)",
        ),
        (
            ["run"],
            "error: registry/saga.yaml: no such file (run saga in your project's folder, "
            "or give --registry PATH)",
        ),
    ],
)
def test_a_command_outside_the_project_says_where_to_run_it(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = _saga(tmp_path, *args)
    assert done.returncode == 1
    assert done.stderr.strip() == message, done.stderr
