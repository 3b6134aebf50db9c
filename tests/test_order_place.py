"""`saga order place`, the checkout's command, refuses what the registry or the shop would
refuse with one line and exit status 1, never a traceback: an empty customer, an order id
longer than the registry's `Id` (64 characters), an id already used."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT

Place = Callable[..., subprocess.CompletedProcess[str]]
"""`saga order place ARGS...` from the repository root, on a seeded shop of the test's own."""


@pytest.fixture
def place(tmp_path: Path) -> Place:
    env = {
        **os.environ,
        "SAGA_BUS": f"embedded:{tmp_path}/bus.db",
        "SAGA_DB_URL": f"sqlite:///{tmp_path}/{{service}}.db",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "saga_registry", "order", "place", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    seeded = subprocess.run(
        [sys.executable, "-m", "saga_registry", "shop", "seed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr
    return run


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert done.stdout == "", "nothing is printed as placed"
    return lines[0]


def test_an_empty_customer_is_refused_in_one_line(place: Place) -> None:
    line = _one_line_error(place("--customer", "", "--item", "apple:1"))
    assert "--customer" in line and "at least 1 character" in line


def test_an_order_id_over_the_registry_limit_is_refused_in_one_line(place: Place) -> None:
    longest = "o" * 64
    ok = place("--customer", "c1", "--id", longest, "--item", "apple:1")
    assert ok.returncode == 0 and ok.stdout.strip() == longest, ok.stderr
    done = place("--customer", "c1", "--id", "o" * 65, "--item", "apple:1")
    line = _one_line_error(done)
    assert "--id" in line and "at most 64 characters" in line


def test_an_order_id_already_used_is_refused_in_one_line(place: Place) -> None:
    first = place("--customer", "c1", "--id", "twice", "--item", "apple:1")
    assert first.returncode == 0 and first.stdout.strip() == "twice", first.stderr
    again = place("--customer", "c2", "--id", "twice", "--item", "pear:1")
    line = _one_line_error(again)
    assert line == "error: order twice exists already: an order id is used once"
