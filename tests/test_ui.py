"""`saga ui` in a real browser: Debian's chromium, headless, driven by Playwright (pointed
at the system browser; nothing is downloaded). The page loads with no console error on
both registries; a saga placed while the page is open appears, its timeline lists its
events in log order (as `saga trace` does), and the dead-letter view shows a letter and
replays it. Screenshots of each view go to `SAGA_UI_SCREENSHOTS` (CI keeps them)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT
from tests.test_observability import free_port
from tests.test_saga_run import SAGA, make_project, place, start, wait_terminal

CHROMIUM = shutil.which("chromium")
# Chromium's calls home are refused on a closed network, many at a time: keep it quiet.
_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("SAGA_REQUIRE_BROWSER") == "1":
            pytest.fail("SAGA_REQUIRE_BROWSER=1 but Debian's chromium is not installed")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
        yield b
        b.close()


def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SAGA_UI_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def serve(cwd: Path, db: str, bus: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`saga ui` on a free port, once it answers; and its address."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(
        [*SAGA, "ui", "--db", db, "--bus", bus, "--port", str(port), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/", timeout=5):
                return proc, url
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"saga ui did not answer: {proc.communicate()[1]}") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def watched(browser: Any) -> tuple[Any, list[str]]:
    """A new page, and the console errors and uncaught exceptions it will have."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    return page, errors


def traced(cwd: Path, db: str, bus: str, saga_id: str) -> list[str]:
    """The event types of `saga trace --json`, in its (log) order."""
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [*SAGA, "trace", saga_id, "--json", "--db", db, "--bus", bus],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [e["event_type"] for e in json.loads(done.stdout)["events"]]


def timeline_of(page: Any) -> list[str]:
    rows = page.eval_on_selector_all(
        "[data-testid=timeline-event]", "groups => groups.map(g => g.dataset.event)"
    )
    table = page.eval_on_selector_all("#events tbody tr", "rows => rows.map(r => r.dataset.event)")
    assert rows == table
    return list(rows)


def test_a_saga_placed_while_watching_appears_with_its_timeline_and_its_letter_is_replayed(
    tmp_path: Path, browser: Any
) -> None:
    root = make_project(tmp_path)
    db, bus = "sqlite:///dbs/{service}.db", "embedded:bus.db"
    service = start(root, fail="Billing")  # Billing is broken: the saga parks there
    ui, url = serve(root, db, bus)
    try:
        page, errors = watched(browser)
        page.goto(f"{url}/#/sagas")
        page.wait_for_selector("#live.on")
        assert page.locator("#saga-table tbody tr").count() == 0
        # Playwright's sync API holds this thread's event loop: place from another thread.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, place(root, 1)).result()
        # No reload: the event stream tells the page, which shows the saga, parked.
        page.wait_for_selector('tr[data-saga="trip-0"] .badge.s-parked', timeout=90_000)
        page.screenshot(path=str(shots(tmp_path) / "sagas.png"), full_page=True)

        page.click('a[href="#/sagas/trip-0"]')
        page.wait_for_selector("[data-testid=timeline-event]")
        assert timeline_of(page) == traced(root, db, bus, "trip-0")
        assert page.locator(".act.a-dead-lettered").count() >= 1
        page.wait_for_function("document.getElementById('saga-path').naturalWidth > 0")

        page.goto(f"{url}/#/dead-letters")
        row = page.locator('tr[data-saga="trip-0"][data-service="Billing"]')
        row.wait_for()
        assert "Billing is broken" in row.inner_text()
        page.screenshot(path=str(shots(tmp_path) / "dead-letters.png"), full_page=True)

        stop(service)
        service = start(root)  # the fix is deployed
        row.locator("[data-testid=replay]").click()
        result = page.locator("[data-testid=replay-result]")
        result.wait_for(state="visible")
        page.wait_for_function(
            "document.querySelector('[data-testid=replay-result]').textContent.length > 0"
        )
        assert result.inner_text() == "replayed 1 letter(s) of saga trip-0 for Billing"
        wait_terminal(root, 1)
        page.goto(f"{url}/#/sagas/trip-0")
        page.wait_for_selector("#saga-state.o-success", timeout=30_000)
        assert timeline_of(page) == traced(root, db, bus, "trip-0")
        page.screenshot(path=str(shots(tmp_path) / "timeline.png"), full_page=True)
        assert errors == []
    finally:
        stop(ui)
        stop(service)


def test_the_checkout_in_the_browser(tmp_path: Path, browser: Any) -> None:
    db, bus = f"sqlite:///{tmp_path}/{{service}}.db", f"embedded:{tmp_path}/bus.db"
    env = {**os.environ, "SAGA_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    service = subprocess.Popen(
        [*SAGA, "run", "--db", db, "--bus", bus],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ui, url = serve(ROOT, db, bus)
    try:
        order = {
            "customer_id": "c-ui",
            "items": [{"sku": "apple", "quantity": 1, "unit_price": 120}],
            "total": 120,
            "currency": "EUR",
        }
        placed = subprocess.run(
            [*SAGA, "start", "OrderCreated", "--data", json.dumps(order), "--bus", bus],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert placed.returncode == 0, placed.stderr
        saga_id = placed.stdout.strip().splitlines()[-1]
        page, errors = watched(browser)
        page.goto(f"{url}/#/")
        page.wait_for_selector("[data-testid=total-ended] b:text('1')", timeout=90_000)
        for image in ("choreography", "state-machine"):
            page.wait_for_function(f"document.getElementById('{image}').naturalWidth > 0")
        page.screenshot(path=str(shots(tmp_path) / "overview.png"), full_page=True)
        page.goto(f"{url}/#/sagas/{saga_id}")
        page.wait_for_selector("[data-testid=timeline-event]")
        events = timeline_of(page)
        assert events[0] == "OrderCreated"
        assert events == traced(ROOT, db, bus, saga_id)
        page.screenshot(path=str(shots(tmp_path) / "checkout-timeline.png"), full_page=True)
        page.goto(f"{url}/#/sagas")
        page.wait_for_selector(f'tr[data-saga="{saga_id}"]')
        page.goto(f"{url}/#/dead-letters")
        page.wait_for_function(
            "document.getElementById('dlq-count').textContent.startsWith('0 dead letter')"
        )
        assert errors == []
    finally:
        stop(ui)
        stop(service)


def test_replays_are_refused_from_elsewhere_without_the_token(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    db, bus = "sqlite:///dbs/{service}.db", "embedded:bus.db"
    ui, url = serve(root, db, bus, "--token", "s3cret")

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(
            url + "/api/dead-letters/replay", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    body = json.dumps({"service": "Billing", "saga_id": "trip-0"}).encode()
    try:
        as_json = {"Content-Type": "application/json"}
        status, text = post(body, {"Content-Type": "text/plain"})
        assert status == 415 and "application/json" in text
        status, text = post(body, {**as_json, "Origin": "http://evil.example"})
        assert status == 403 and "cross-origin" in text
        status, text = post(body, as_json)
        assert status == 403 and "token" in text
        status, text = post(body, {**as_json, "Authorization": "Bearer s3cret"})
        assert status == 409 and "no log" in text  # let through: there is nothing to replay
    finally:
        stop(ui)
    # Without a token, from this machine: let through, unless addressed to another name
    # (a page of another site whose name was pointed at 127.0.0.1: DNS rebinding), which
    # cannot even read.
    ui, url = serve(root, db, bus)
    try:
        port = url.rsplit(":", 1)[1]
        assert post(body, as_json)[0] == 409
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        assert post(body, {**as_json, **rebound})[0] == 400
        request = urllib.request.Request(url + "/api/overview", headers=rebound)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400
    finally:
        stop(ui)


def test_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run(
            [*SAGA, "ui", "--port", str(taken.getsockname()[1])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: cannot serve on 127.0.0.1:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
