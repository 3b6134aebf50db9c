"""`python -m chaos` ends with a verdict, its JSON report included, even when a broker
restart fails or is slow: the failed restart is a problem of the report, not a reason to
stop without one."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import time
from pathlib import Path

import pytest

from chaos.checker import Verdict
from chaos.cluster import Broker, free_port
from chaos.run import Outcome, Plan, _broker
from tests.helpers import ROOT
from tests.test_chaos import KEYS, _chaos


@pytest.fixture
def java() -> None:
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: scripts/kafka needs Java 17+")
    if not (ROOT / ".kafka" / "libs" / ".complete").exists() and shutil.which("mvn") is None:
        pytest.skip("Kafka is not fetched and mvn is missing: run scripts/kafka start once")


def test_a_broker_restart_that_fails_is_recorded_and_raises_nothing(
    java: None, tmp_path: Path
) -> None:
    # The restart finds its port taken by another program: scripts/kafka refuses to start.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        broker = Broker(
            tmp_path / "kafka", port=squatter.getsockname()[1], controller_port=free_port()
        )
        plan = Plan("kafka", 10, broker_restarts=1, restart_timeout_s=30)
        outcome = Outcome(
            plan, Verdict(sagas=0, stock_conserved=True, money_conserved=True, snapshots_ok=True)
        )
        assert outcome.verdict.ok, "only the restart can fail this outcome"
        asyncio.run(_broker(broker, plan, random.Random(1), 0.1, time.monotonic(), outcome))
    (restart,) = outcome.broker_restarts
    assert restart.up_again_s is None
    assert restart.error is not None and "is taken by another program" in restart.error
    report = outcome.to_json()
    assert report["broker_restart_failures"] == 1 and report["broker_restarts"] == 1
    assert report["problems"][0].startswith("broker restart at ")
    assert "\n" not in report["problems"][0]
    assert not outcome.ok and report["ok"] is False


def test_a_slow_broker_restart_ends_in_a_verdict_with_the_failure_in_it(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # A restart may take 1 s: a broker takes longer, so the restart counts as failed. The
    # broker is not killed for it; it comes up, the run goes on and is judged.
    code, report, output = _chaos(
        tmp_path, "--bus", "kafka", "--sagas", "250", "--kills", "0", "--broker-restarts", "1",
        "--rate", "40", "--poison", "0", "--seed", "12", "--restart-timeout", "1",
    )  # fmt: skip
    assert code == 1, output
    assert report.keys() >= KEYS, output
    assert report["broker_restarts"] == 1 and report["broker_restart_failures"] == 1, output
    (restart,) = report["broker_restarted"]
    assert restart["up_again_s"] is None and "within 1 s" in restart["error"], restart
    assert any(p.startswith("broker restart at ") for p in report["problems"]), output
    assert "FAIL broker restart at " in output
    # The slow broker came up after all: nothing lost, stuck or doubled.
    assert report["sagas"] == report["terminal"] == 250, output
    assert (report["stuck"], report["lost"], report["double_charges"]) == (0, 0, 0), output
