"""What `saga run` refuses at start, all at once, one line per problem: reactions still the
generated stub (unless --allow-stubs), reactions missing, and `--set` keys no service
declares. Each runs `python -m saga_registry run` in a project generated into tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from saga_registry.codegen import write
from saga_registry.engine.handlers import unwritten_reactions
from saga_registry.registry import Registry, load_registry
from saga_registry.registry.model import snake_case
from tests.helpers import TRIP

SAGA = [sys.executable, "-m", "saga_registry", "run", "--wait-for-bus", "1"]


def make_project(tmp_path: Path) -> tuple[Path, Registry]:
    """The trip registry's project as codegen leaves it: every reaction a stub."""
    root = tmp_path / "project"
    (root / "registry").mkdir(parents=True)
    tag = uuid.uuid4().hex[:8]
    text = TRIP.read_text(encoding="utf-8").replace(
        "name: trips.booking.", f"name: t{tag}.trips.booking."
    )
    path = root / "registry" / "saga.yaml"
    path.write_text(text, encoding="utf-8")
    registry = load_registry(path)
    write(registry, path, root, render=False)
    return root, registry


def written(root: Path, registry: Registry, service: str, extra: str = "") -> None:
    """Replace `service`'s stubs by reactions that are written (they emit nothing)."""
    spec = registry.service(service)
    methods = "".join(
        f"\n    async def {method(r.event)}(self, event, ctx):\n        return None\n"
        for r in spec.reactions
    )
    body = extra + (methods or "    pass\n")
    (root / "handlers" / f"{spec.module}.py").write_text(
        f"from handlers.base.{spec.module} import {service}Base\n\n\n"
        f"class {service}({service}Base):\n{body}"
    )


def method(event: str) -> str:
    """The generated name of the reaction to `event`."""
    return f"on_{snake_case(event)}"


def env(root: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAGA_")},
        "PYTHONPATH": str(root),
        "SAGA_BUS": f"embedded:{root / 'bus.db'}",
        "SAGA_DB_URL": f"sqlite:///{root}/dbs/{{service}}.db",
        "SAGA_LOG_LEVEL": "WARNING",
        **extra,
    }


def refused(root: Path, *args: str, **extra: str) -> list[str]:
    """The stderr lines of a `saga run` that must exit 1 at once."""
    result = subprocess.run(
        [*SAGA, *args],
        cwd=root,
        env=env(root, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), result.stderr
    return lines


def starts(root: Path, *args: str, **extra: str) -> str:
    """Start `saga run`, wait until it says it runs, stop it; its stderr."""
    proc = subprocess.Popen(
        [*SAGA, *args],
        cwd=root,
        env=env(root, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    limit = time.monotonic() + 60
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("saga run: ") or time.monotonic() > limit:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    assert any(line.startswith("saga run: ") and " on " in line for line in seen), (
        "".join(seen) + rest
    )
    assert proc.returncode == 0, "".join(seen) + rest
    return "".join(seen) + rest


def test_every_stub_of_every_service_is_named_in_one_refusal(tmp_path: Path) -> None:
    root, registry = make_project(tmp_path)
    written(root, registry, "Billing")
    lines = refused(root)
    stubbed = [s for s in registry.services if s.reactions and s.name != "Billing"]
    assert len(lines) == len(stubbed), lines
    for service, line in zip(stubbed, lines, strict=True):
        assert line.startswith(
            f"error: handler {service.name} in handlers.{service.module} has reaction(s) "
            "still the generated stub: "
        ), line
        assert line.endswith("; write them, or run with --allow-stubs"), line
        for reaction in service.reactions:
            assert method(reaction.event) in line, (reaction.event, line)
    # Only the services asked for are checked.
    assert refused(root, "Flights", "Billing") == [lines[1]]
    assert "Flights" in lines[1]


def test_stubs_run_when_allowed(tmp_path: Path) -> None:
    root, _ = make_project(tmp_path)
    assert "Booking" in starts(root, "--allow-stubs")
    assert "Booking" in starts(root, SAGA_ALLOW_STUBS="1")


def test_services_lacking_reactions_are_all_named_in_one_refusal(tmp_path: Path) -> None:
    root, registry = make_project(tmp_path)
    for service in ("Hotels", "Billing"):
        module = registry.service(service).module
        (root / "handlers" / f"{module}.py").write_text(
            f"from handlers.base.{module} import {service}Base\n\n\n"
            f"class {service}({service}Base):\n    pass\n"
        )
    lines = refused(root, "--allow-stubs")
    assert lines == [
        "error: handler Hotels in handlers.hotels lacks reaction(s): "
        "on_car_rental_failed, on_car_returned, on_flight_booked",
        "error: handler Billing in handlers.billing lacks reaction(s): on_car_rented",
    ]


def test_an_unknown_set_key_is_refused_with_the_closest_declared_key(tmp_path: Path) -> None:
    root, registry = make_project(tmp_path)
    declares = '    options = {"billing.decline_rate": "share of cards declined"}\n'
    written(root, registry, "Billing", extra=declares)
    lines = refused(root, "--allow-stubs", "--set", "billing.declin_rate=0.1")
    assert lines == [
        "error: --set billing.declin_rate: no service declares this key; "
        "did you mean 'billing.decline_rate'?"
    ]
    lines = refused(root, "--allow-stubs", "--set", "colour=blue")
    assert lines == [
        "error: --set colour: no service declares this key; the services take billing.decline_rate"
    ]
    # One process per service takes the settings of all: a key another service of the
    # registry declares is not refused.
    assert "Booking" in starts(root, "Booking", "--allow-stubs", "--set", "billing.decline_rate=1")


class _Written:
    # F has no method at all: nothing to call a stub.
    handler_names: ClassVar[dict[str, str]] = {
        "A": "on_a",
        "B": "on_b",
        "C": "on_c",
        "D": "on_d",
        "E": "on_e",
        "F": "on_f",
    }

    async def on_a(self, event: Any, ctx: Any) -> None:
        """Not written yet."""
        raise NotImplementedError("on_a")

    async def on_b(self, event: Any, ctx: Any) -> None:
        raise NotImplementedError

    async def on_c(self, event: Any, ctx: Any) -> None:
        if event is None:
            raise NotImplementedError("only half")

    async def on_d(self, event: Any, ctx: Any) -> None:
        raise ValueError("a deliberate refusal is written code")


# Built at run time: no source to read, so it counts as written.
exec("async def on_e(self, event, ctx):\n    raise NotImplementedError\n")
_Written.on_e = globals()["on_e"]  # type: ignore[attr-defined]


def test_a_stub_is_a_body_that_only_raises_not_implemented() -> None:
    assert unwritten_reactions(_Written) == ["on_a", "on_b"]
