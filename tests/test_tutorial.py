"""docs/tutorial.md, run as a user would: every command and every file edit of the page,
in order, in a fresh folder. The page cannot drift from what works.

How the page is read: ```sh blocks are commands, one per line, run by bash in the current
folder (`cd` changes it); the line that makes a virtual environment and installs the
project is skipped, since the engine is already installed in the environment running
these tests (the project itself installs nothing: its handlers are imported from its
folder). ```sh background starts a long-running command (`saga run`) that runs until the
end. ```python file=PATH writes PATH; ```diff file=PATH is applied with `git apply`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """One fenced block of the page: its language, its options and its text."""

    lang: str
    options: str
    text: str


def blocks() -> list[Block]:
    """The page's fenced blocks, in order (blocks without a language are pictures)."""
    return [
        Block(m.group(1), m.group(2).strip(), m.group(3))
        for m in _BLOCK.finditer(TUTORIAL.read_text("utf-8"))
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The commands of the page find `saga`, `pytest` and `python` in this environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("SAGA_BUS", "SAGA_DB_URL", "SAGA_REGISTRY", "PYTHONPATH"):
        env.pop(name, None)
    return env


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"`{line}` in {cwd} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _commands(text: str) -> list[str]:
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _wait_for_end(saga_id: str, last_event: str, cwd: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            ["saga", "trace", saga_id], cwd=cwd, env=_env(), capture_output=True, text=True
        )
        if done.returncode == 0 and last_event in done.stdout:
            return
        assert time.monotonic() < deadline, f"saga {saga_id} did not end:\n{done.stdout}"
        time.sleep(0.5)


def test_the_tutorial_runs_as_written(tmp_path: Path, dot_installed: None) -> None:
    cwd = tmp_path
    outputs: dict[str, str] = {}
    background: list[subprocess.Popen[str]] = []
    logs: list[Path] = []
    try:
        for block in blocks():
            if block.lang == "sh" and block.options == "background":
                log = tmp_path / f"background-{len(logs)}.log"
                logs.append(log)
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", f"exec {block.text.strip()}"],
                        cwd=cwd,
                        env=_env(),
                        stdout=log.open("w"),
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
                _wait_for_log(log, "Ctrl-C to stop", background[-1])
            elif block.lang == "sh":
                for line in _commands(block.text):
                    if "pip install" in line:
                        continue
                    if line.startswith("cd "):
                        cwd = (cwd / line[3:].strip()).resolve()
                        continue
                    if line.startswith("saga trace s-101"):
                        _wait_for_end("s-101", "SignupCancelled", cwd)
                    outputs[line] = _run(line, cwd).stdout
            elif block.lang in ("python", "diff") and block.options.startswith("file="):
                target = cwd / block.options.removeprefix("file=")
                if block.lang == "python":
                    target.write_text(block.text, "utf-8")
                else:
                    patch = tmp_path / "edit.diff"
                    patch.write_text(block.text, "utf-8")
                    _run(f"git apply --verbose {patch}", cwd)
                assert target.is_file(), target
    finally:
        for proc in background:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    # What the page says the reader sees.
    codegen = next(out for line, out in outputs.items() if line == "saga codegen")
    assert "handlers/welcome.py" in codegen
    pytest_runs = [out for line, out in outputs.items() if line.startswith("pytest")]
    assert pytest_runs and "passed" in pytest_runs[-1] and "failed" not in pytest_runs[-1]
    sagas = next(out for line, out in outputs.items() if line == "saga sagas")
    assert "completed" in sagas and "cancelled" in sagas, sagas
    trace = outputs["saga trace s-101"]
    order = ["SignupRequested", "CardCharged", "AccountOpened", "WelcomeFailed"]
    order += ["AccountClosed", "ChargeRefunded", "SignupCancelled"]
    positions = [trace.find(name) for name in order]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), trace
    assert (cwd / "s-101.dot").is_file()
    assert (cwd / "docs" / "diagrams" / "outcome_cancelled_after_welcome_failed.svg").is_file()
    assert all(proc.returncode == 0 for proc in background), [p.read_text() for p in logs]


def _wait_for_log(log: Path, text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_text():
        assert proc.poll() is None, f"background command ended:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.2)
