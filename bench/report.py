"""The benchmark's figures: computed from a run, printed as a table, written as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.baseline import BaselineResult
from bench.engine_run import EngineResult
from bench.scenario import HappyPath


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0..100) of `values`, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> dict[str, Any]:
    """Where the figures were taken: CPUs, CPU model, memory, Python, and the load
    average at the end (other work on the machine skews every figure; the benchmark adds
    the one before the run)."""
    model = platform.processor() or platform.machine()
    memory_gb = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass
    return {
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(memory_gb, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def figures(
    bus: str,
    rate: float | None,
    warmup: int,
    path: HappyPath,
    engine: EngineResult,
    baseline: BaselineResult,
) -> dict[str, Any]:
    """The JSON document of one run (every key the benchmark promises, and context)."""
    timings = engine.timings
    window = timings.window_s
    sagas = len(timings.placed)
    sagas_per_s = sagas / window
    latencies = timings.latencies_ms()
    return {
        "bus": bus,
        "sagas": sagas,
        "rate": rate,
        "warmup": warmup,
        "sagas_per_s": round(sagas_per_s, 2),
        "events_per_s": round(sagas_per_s * len(path.events), 1),
        "events_per_s_note": (
            f"derived: {len(path.events)} events per happy-path saga "
            f"({', '.join(path.events)}) x sagas / measured window"
        ),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "latency_note": (
            "order placed (due time at a fixed rate) -> final snapshot archived by OrderHistory"
        ),
        "window_s": round(window, 3),
        "placing_s": round(timings.placing_s, 3),
        "cpu_s": {name: round(s.cpu_s, 2) for name, s in engine.processes.items()},
        "cpu_note": "CPU seconds (user + system) of each service process in the measured run",
        "cpu_ms_per_saga": round(sum(s.cpu_s for s in engine.processes.values()) * 1000 / sagas, 3),
        "broker_cpu_ms_per_saga": (
            round(engine.broker.cpu_s * 1000 / sagas, 3) if engine.broker else None
        ),
        "cpu_per_saga_note": (
            "services' CPU in the measured run / its sagas (embedded: the one process, which "
            "also places the orders); the broker's JVM apart, when it runs on this machine"
        ),
        "deliveries_per_saga": round(sum(engine.inbox_rows.values()) / (sagas + warmup), 2),
        "deliveries_per_saga_by_service": {
            name: round(rows / (sagas + warmup), 2) for name, rows in engine.inbox_rows.items()
        },
        "deliveries_note": (
            "inbox rows over every service's database / sagas run (warm-up included): "
            "deliveries a service took in; events outside its projection are passed unread"
        ),
        "peak_rss_mb": {name: round(s.peak_rss_mb, 1) for name, s in engine.processes.items()},
        "rss_growth_mb": {name: round(s.rss_growth_mb, 1) for name, s in engine.processes.items()},
        "rss_note": "peak sampled every 0.2 s; growth = RSS at the end - RSS after warm-up",
        "baseline_sagas_per_s": round(baseline.sagas_per_s, 2),
        # At a fixed rate the engine's sagas/s is the rate: only a run as fast as they
        # go compares with the baseline, which always is one.
        "ratio": None if rate else round(sagas_per_s / baseline.sagas_per_s, 4),
        "happy_path": {
            "events": list(path.events),
            "relays": list(path.relays),
            "consumer_hops": path.hops,
        },
        "baseline": {"sagas": baseline.sagas, "seconds": round(baseline.seconds, 3)},
        "machine": machine(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def table(doc: dict[str, Any]) -> str:
    """The figures as a small plain-text table."""
    rate = f"{doc['rate']:g}/s" if doc["rate"] else "as fast as they go"
    jvm = doc["broker_cpu_ms_per_saga"]
    broker = f", broker {jvm:.2f} ms" if jvm is not None else ""
    rows = [
        ("bus", doc["bus"]),
        ("sagas (after warm-up)", f"{doc['sagas']} ({rate}, warm-up {doc['warmup']})"),
        ("sagas/s", f"{doc['sagas_per_s']:.1f}"),
        ("events/s", f"{doc['events_per_s']:.1f}"),
        (
            "latency p50/p95/p99",
            f"{doc['p50_ms']:.0f} / {doc['p95_ms']:.0f} / {doc['p99_ms']:.0f} ms",
        ),
        ("cpu per saga", f"{doc['cpu_ms_per_saga']:.2f} ms (services)" + broker),
        ("deliveries per saga", f"{doc['deliveries_per_saga']:.2f} (taken in, all services)"),
        ("baseline sagas/s", f"{doc['baseline_sagas_per_s']:.1f}"),
        (
            "ratio",
            "- (at a fixed rate)" if doc["ratio"] is None else f"{doc['ratio']:.3f}",
        ),
    ]
    for name in doc["cpu_s"]:
        rows.append(
            (
                f"  {name}",
                f"cpu {doc['cpu_s'][name]:.1f} s, peak rss {doc['peak_rss_mb'][name]:.0f} MB"
                f" ({doc['rss_growth_mb'][name]:+.1f} MB over the measured run)",
            )
        )
    load = doc["machine"]
    before = load.get("load_avg_before_1_5_15")
    rows.append(
        (
            "load average (1 min)",
            (f"{before[0]:.2f} before, " if before else "")
            + f"{load['load_avg_1_5_15'][0]:.2f} at the end",
        )
    )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if doc["window_s"] > 1.2 * doc["placing_s"] + 1.0:
        lines.append(
            f"note: the orders were placed in {doc['placing_s']:.1f} s but took "
            f"{doc['window_s']:.1f} s to end: the latencies measure a queue"
        )
    return "\n".join(lines)


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Write `doc` to `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
