"""What a running service tells its operators: Prometheus metrics scraped from `saga run
--metrics-port` agree with what its database holds, and `--log-level DEBUG` writes one
line per delivery (as JSON with `--log-format json`)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from saga_registry.registry import load_registry
from tests.helpers import ROOT
from tests.test_saga_run import bus_url, make_project, place, start, wait_terminal

__all__ = ["bus_url"]  # the fixture, imported for its use here

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """The samples at `port`, once the service serves them (it may still be starting)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                text = r.read().decode()
            break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(port: int) -> set[str]:
    """The metric families served (those with no sample yet too)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def series(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` whose labels include `labels`."""
    return {
        k: v
        for (n, k), v in samples.items()
        if n == name and all((key, value) in k for key, value in labels.items())
    }


def inbox_by_type(root: Path, service: str) -> Counter[str]:
    with sqlite3.connect(root / "dbs" / f"{service.lower()}.db") as conn:
        return Counter(t for (t,) in conn.execute("SELECT event_type FROM saga_inbox"))


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    return err


def test_metrics_of_a_run_agree_with_the_databases(tmp_path: Path, bus_url: str) -> None:
    root = make_project(tmp_path)
    reg = load_registry(root / "registry" / "saga.yaml")
    port = free_port()
    proc = start(root, "--metrics-port", str(port), bus=bus_url)
    try:
        asyncio.run(place(root, 5, bus_url))
        wait_terminal(root, 5)
        deadline = time.monotonic() + 30
        while True:  # the last offsets and outbox marks settle a moment after the states
            samples = scrape(port)
            lag = series(samples, "saga_consumer_lag")
            backlog = series(samples, "saga_outbox_backlog")
            settled = lag and not any(lag.values()) and not any(backlog.values())
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert settled, (lag, backlog)
        terminal = set(reg.state_machine.terminal_states)
        for service in reg.services:
            name = service.name
            inbox = inbox_by_type(root, name)
            applied = series(samples, "saga_deliveries_total", service=name, outcome="applied")
            counted = Counter({dict(k)["event_type"]: int(v) for k, v in applied.items()})
            assert counted == inbox, name
            ages = series(samples, "saga_event_age_seconds_count", service=name)
            assert sum(ages.values()) == sum(inbox.values()), name
            reacted = series(samples, "saga_reaction_seconds_count", service=name)
            assert {dict(k)["event_type"] for k in reacted} == {
                e for e in inbox if e in {r.event for r in service.reactions}
            }, name
            assert series(samples, "saga_parked_sagas", service=name) == {(("service", name),): 0.0}
        last = reg.services[-1].name
        by_state = series(samples, "saga_sagas", service=last)
        assert sum(v for k, v in by_state.items() if dict(k)["state"] in terminal) == 5
        # The Grafana dashboard in docs/ asks only for series a service serves.
        dashboard = (ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8")
        asked = {
            re.sub(r"_(bucket|count|sum)$", "", name)
            for name in re.findall(r"\bsaga_[a-z_]+", dashboard)
        } - {"saga_registry"}
        assert asked and asked <= families(port), asked
    finally:
        if proc.poll() is None:
            stop(proc)


def test_metrics_count_retries_dead_letters_and_parked_sagas(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    port = free_port()
    proc = start(root, "--metrics-port", str(port), fail="Billing")
    try:
        asyncio.run(place(root, 3))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            samples = scrape(port)
            if (
                series(samples, "saga_parked_sagas", service="Billing").get(
                    (("service", "Billing"),)
                )
                == 3
            ):
                break
            time.sleep(0.5)
        dead = series(samples, "saga_deliveries_total", service="Billing", outcome="dead_lettered")
        assert sum(dead.values()) == 3
        retries = series(samples, "saga_retries_total", service="Billing")
        assert sum(retries.values()) == 3 * 4  # 5 attempts each: 4 of them again
        assert series(samples, "saga_parked_sagas", service="Billing") == {
            (("service", "Billing"),): 3.0
        }
    finally:
        if proc.poll() is None:
            stop(proc)


def test_debug_log_has_one_json_line_per_delivery(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    reg = load_registry(root / "registry" / "saga.yaml")
    proc = start(root, "--log-level", "DEBUG", "--log-format", "json")
    try:
        asyncio.run(place(root, 3))
        wait_terminal(root, 3)
        time.sleep(1)
    finally:
        err = stop(proc)
    # Every line is JSON, the command's own ("saga run: ... on ...") included.
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(line["logger"] == "saga.run" for line in lines)
    deliveries = [line for line in lines if line["logger"] == "saga.deliveries"]
    for service in reg.services:
        mine = [d for d in deliveries if d["service"] == service.name]
        applied = Counter(d["event_type"] for d in mine if d["outcome"] == "applied")
        assert applied == inbox_by_type(root, service.name), service.name
        assert all(d["saga_id"].startswith("trip-") and d["event_id"] for d in mine)
        assert all(d["level"] == "DEBUG" and service.name in d["message"] for d in mine)


def test_metrics_port_taken_is_a_one_line_error(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = start(root, "--metrics-port", str(taken.getsockname()[1]))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: cannot serve metrics on 127.0.0.1:")
    assert "Traceback" not in err
