"""`python -m bench` runs end to end on both buses and writes every figure it promises.
Not a timed test: it checks the shape and the consistency of the figures only."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

KEYS = (
    "sagas",
    "sagas_per_s",
    "events_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "cpu_s",
    "peak_rss_mb",
    "baseline_sagas_per_s",
    "ratio",
    "cpu_ms_per_saga",
    "deliveries_per_saga",
)
SERVICES = ["OMS", "Cart", "Inventory", "Payment", "Logistics", "OrderHistory"]


def _bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "sagas/s" in done.stdout
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def _check(doc: dict[str, Any], sagas: int, processes: list[str]) -> None:
    assert all(k in doc for k in KEYS), [k for k in KEYS if k not in doc]
    assert doc["sagas"] == sagas
    assert doc["sagas_per_s"] > 0 and doc["baseline_sagas_per_s"] > 0
    assert doc["events_per_s"] == pytest.approx(doc["sagas_per_s"] * 4, rel=0.01)
    assert 0 < doc["p50_ms"] <= doc["p95_ms"] <= doc["p99_ms"]
    if doc["rate"] is None:
        ratio = doc["sagas_per_s"] / doc["baseline_sagas_per_s"]
        assert doc["ratio"] == pytest.approx(ratio, rel=0.01)
    else:  # the engine's pace is the rate's: no comparison with the bare chain
        assert doc["ratio"] is None
    assert len(doc["machine"]["load_avg_before_1_5_15"]) == 3
    assert sorted(doc["cpu_s"]) == sorted(processes) == sorted(doc["peak_rss_mb"])
    assert all(v >= 0 for v in doc["cpu_s"].values())
    assert all(v > 10 for v in doc["peak_rss_mb"].values())  # a Python process, at least
    assert doc["happy_path"]["consumer_hops"] == 4
    cpu = sum(doc["cpu_s"].values()) * 1000 / sagas
    assert doc["cpu_ms_per_saga"] == pytest.approx(cpu, rel=0.01, abs=0.01)
    # Each service takes in only its projection's events (24 when all took in all):
    # OrderCreated begins the saga, so every service that takes anything in sees it.
    assert doc["deliveries_per_saga_by_service"] == {
        "OMS": 2.0,  # OrderCreated, DeliveryScheduled
        "Cart": 0.0,
        "Inventory": 1.0,  # OrderCreated
        "Payment": 2.0,  # OrderCreated, InventoryReserved
        "Logistics": 3.0,  # OrderCreated, PaymentSucceeded, DeliveryScheduled
        "OrderHistory": 4.0,  # an observer: every event
    }
    assert doc["deliveries_per_saga"] == 12.0


def test_bench_embedded_writes_every_figure(tmp_path: Path) -> None:
    _check(_bench(tmp_path, "--bus", "embedded", "--sagas", "30"), 30, ["all-services"])


def test_bench_at_a_fixed_rate_counts_every_saga(tmp_path: Path) -> None:
    doc = _bench(tmp_path, "--bus", "embedded", "--sagas", "20", "--rate", "50")
    _check(doc, 20, ["all-services"])
    assert doc["rate"] == 50


def test_bench_kafka_one_process_per_service(tmp_path: Path, kafka_bootstrap: str) -> None:
    doc = _bench(
        tmp_path, "--bus", "kafka", "--sagas", "20", "--bootstrap", kafka_bootstrap, "--metrics"
    )
    _check(doc, 20, SERVICES)
    assert doc["metrics"] is True
    # The run's topics are gone from the broker (unless --keep); deletion takes a moment.
    deadline = time.monotonic() + 30
    while True:
        listed = subprocess.run(
            [sys.executable, "-c", _LIST_TOPICS, kafka_bootstrap],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        left = [t for t in listed.stdout.split() if doc["run_id"] in t]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not left, left


_LIST_TOPICS = """
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient
async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1])
    await admin.start()
    try:
        print("\\n".join(await admin.list_topics()))
    finally:
        await admin.close()
asyncio.run(main())
"""


def test_bench_bad_arguments_are_one_line_and_status_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--bus", "carrier-pigeon", "--sagas", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--bus" in done.stderr
