"""Benchmark (not a test) of registry validation and codegen.

Times, for the seed registry and for a generated one of --events events over --services
services (1,000 / 100 by default):

- validate: `codegen.load_registry` (YAML, JSON Schema, model, meaning checks);
- codegen: `codegen.write` into a fresh temp dir, rendering SVGs with Graphviz;
- codegen_no_render: the same with `render=False`;
- check: `codegen.check` against the rendered output.

Each figure is the median of --repeat runs. Uses only the public `codegen` API.

    .venv/bin/python scripts/bench_codegen.py [--events N] [--services M] [--repeat K]
                                               [--render-timeout S] [--json PATH]

Rendering runs in a child process group that is killed after --render-timeout seconds:
Graphviz's `dot` can take many minutes on a graph with a thousand labelled edges.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saga_registry.codegen import check, write  # noqa: E402
from saga_registry.registry import Registry, load_registry  # noqa: E402

SEED = ROOT / "registry" / "saga.yaml"
BUDGET_S = 5.0
_CHILD_FLAG = "--child-write"
T = TypeVar("T")

# -- a generated registry ---------------------------------------------------------------
#
# Service i owns k events: d = k - 3 domain steps D1..Dd, one failure F and two
# compensations C1, C2. Its states are p{i}_0 .. p{i}_{d-1}, then the next service's
# p{i+1}_0 (or `completed` after the last service); F leaves the middle state to f{i},
# C1 goes f{i} -> c{i}, C2 goes c{i} -> `cancelled`. Service i reacts to the event that
# enters each of its states (the previous service's last step for p{i}_0), emitting the
# next step (and F in the middle state), to F (emits C1) and to C1 (emits C2). Every
# service has a deadline on its failure state. The machine is a DAG with services + 1
# outcome paths; the last service's Dd and every C2 end the saga unconsumed.


def _dump_yaml(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML for dicts, lists and scalars; scalars as JSON (valid YAML)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            nested = isinstance(item, dict) and bool(item)
            if nested or (isinstance(item, list) and any(isinstance(x, dict) for x in item)):
                lines.append(f"{pad}{key}:")
                lines.extend(_dump_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_flow(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                body = _dump_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines.extend(body[1:])
            else:
                lines.append(f"{pad}- {_flow(item)}")
    else:
        lines.append(f"{pad}{_flow(value)}")
    return lines


def _flow(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_flow(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def _id() -> dict[str, Any]:
    return {"$ref": "Id"}


def _domain_payload(i: int, j: int) -> dict[str, Any]:
    props: dict[str, Any] = {"run_id": _id(), f"step{j}_ref": _id()}
    required = ["run_id", f"step{j}_ref"]
    if j % 3 == 0:
        props["amount"] = {"$ref": "Money"}
        props["currency"] = {"$ref": "Currency"}
        required += ["amount", "currency"]
    if j % 3 == 1:
        props["lines"] = {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {
                    "sku": _id(),
                    "quantity": {"type": "integer", "minimum": 1},
                    "note": {"type": "string", "maxLength": 200},
                },
            },
        }
        required.append("lines")
    props["comment"] = {"type": "string", "maxLength": 500, "description": f"svc {i} step {j}"}
    return {"required": required, "properties": props}


def generate_registry(n_events: int, n_services: int) -> dict[str, Any]:
    """A valid registry with exactly `n_events` events over `n_services` services."""
    if n_services < 1 or n_events < 4 * n_services:
        raise ValueError("need at least 1 service and 4 events per service")
    base, extra = divmod(n_events, n_services)
    per_service = [base + (1 if i < extra else 0) for i in range(n_services)]

    services: dict[str, Any] = {}
    events: dict[str, Any] = {}
    states: dict[str, Any] = {}
    transitions: list[dict[str, Any]] = []
    deadlines: list[dict[str, Any]] = []
    failure_reasons = ["rejected", "unavailable", "timeout"]
    entering = ""  # the event that enters the current service's first state

    for i, k in enumerate(per_service):
        svc = f"Svc{i:03d}"
        d = k - 3
        mid = d // 2
        dom = [f"{svc}Step{j}Done" for j in range(1, d + 1)]
        fail, comp1, comp2 = f"{svc}Failed", f"{svc}Undone", f"{svc}Compensated"
        st = [f"p{i:03d}_{j}" for j in range(d)]
        nxt = f"p{i + 1:03d}_0" if i + 1 < n_services else "completed"
        f_state, c_state = f"f{i:03d}", f"c{i:03d}"

        reacts: dict[str, Any] = {}
        svc_doc: dict[str, Any] = {"description": f"Service {i}: runs step {i} of the saga."}
        for j, name in enumerate(dom):
            emits = [name] if j != mid else [name, fail]
            trigger = entering if j == 0 else dom[j - 1]
            if trigger:
                reacts[trigger] = {"emits": emits}
            else:  # the saga's very first step: started, not reacted to
                svc_doc["initiates"] = emits
        reacts[fail] = {"emits": [comp1]}
        reacts[comp1] = {"emits": [comp2]}
        svc_doc["reacts"] = reacts
        services[svc] = svc_doc

        for j, name in enumerate(dom):
            events[name] = {
                "kind": "domain",
                "producer": svc,
                "stage": {"en": f"Service {i} finished step {j + 1}"},
                "payload": _domain_payload(i, j + 1),
            }
            states[st[j]] = {"description": f"Service {i}, before step {j + 1}."}
            transitions.append({"on": name, "from": st[j], "to": st[j + 1] if j + 1 < d else nxt})
        events[fail] = {
            "kind": "failure",
            "producer": svc,
            "stage": {"en": f"Service {i} failed"},
            "payload": {
                "required": ["run_id", "reason"],
                "properties": {
                    "run_id": _id(),
                    "reason": {"type": "string", "enum": failure_reasons},
                    "detail": {"type": "string", "maxLength": 500},
                },
            },
        }
        for name, text in ((comp1, "undid its step"), (comp2, "reported the compensation")):
            events[name] = {
                "kind": "compensation",
                "producer": svc,
                "stage": {"en": f"Service {i} {text}"},
                "payload": {
                    "required": ["run_id", "cause"],
                    "properties": {
                        "run_id": _id(),
                        "cause": {"type": "string", "enum": [fail]},
                        "refund": {"$ref": "Money"},
                    },
                },
            }
        states[f_state] = {"description": f"Service {i} failed; to be compensated."}
        states[c_state] = {"description": f"Service {i} compensated; to be cancelled."}
        transitions.append({"on": fail, "from": st[mid], "to": f_state})
        transitions.append({"on": comp1, "from": f_state, "to": c_state})
        transitions.append({"on": comp2, "from": c_state, "to": "cancelled"})
        deadlines.append(
            {
                "state": st[mid],
                "within_s": 30 + i,
                "emit": fail,
                "payload": {"reason": "timeout", "detail": f"service {i} gave no answer"},
            }
        )
        entering = dom[-1]

    states["completed"] = {
        "description": "Every step done.",
        "terminal": True,
        "outcome": "success",
    }
    states["cancelled"] = {
        "description": "A step failed and was compensated.",
        "terminal": True,
        "outcome": "failure",
    }
    return {
        "version": 1,
        "saga": {"name": "bench", "title": "Generated benchmark saga", "key": "run_id"},
        "topics": {
            "events": {"name": "bench.events", "partitions": 12},
            "dead_letter": {"name": "bench.events.dlq", "partitions": 1},
        },
        "services": services,
        "definitions": {
            "Money": {"type": "integer", "minimum": 0},
            "Currency": {"type": "string", "enum": ["EUR", "USD"]},
            "Id": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        "events": events,
        "state_machine": {
            "initial": "p000_0",
            "states": states,
            "transitions": transitions,
            "deadlines": deadlines,
        },
    }


def write_generated(path: Path, n_events: int, n_services: int) -> None:
    """Write the generated registry to `path` as block-style YAML."""
    doc = generate_registry(n_events, n_services)
    header = f"# Generated by scripts/bench_codegen.py: {n_events} events, {n_services} services.\n"
    path.write_text(header + "\n".join(_dump_yaml(doc)) + "\n", encoding="utf-8")


# -- timing -----------------------------------------------------------------------------


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _child_write(registry: str, out: str) -> int:
    """In a child process: time `write(render=True)` and print the result as JSON."""
    reg = load_registry(registry)
    elapsed, report = _timed(partial(write, reg, Path(registry), Path(out), render=True))
    result = {"codegen_s": elapsed, "not_rendered": len(report.not_rendered), "notes": report.notes}
    print(json.dumps(result))
    return 0


def _render_write(path: Path, out: Path, timeout: float) -> dict[str, Any] | None:
    """`write(render=True)` timed in a child process group (Graphviz's `dot` can run for
    minutes on a big graph, and `write` has no time limit); None if it took too long."""
    cmd = [sys.executable, str(Path(__file__).resolve()), _CHILD_FLAG, str(path), str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout if timeout > 0 else None)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:  # timed out or interrupted: end the child and its `dot`s
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"codegen child failed ({proc.returncode}): {stderr.strip()}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def _one_run(
    path: Path, render_timeout: float, render: bool
) -> tuple[Registry, dict[str, float | None], dict[str, Any]]:
    """One timed run of each step; the registry, the timings (None: timed out or skipped)
    and what was produced."""
    times: dict[str, float | None] = {}
    times["validate"], reg = _timed(partial(load_registry, path))
    with tempfile.TemporaryDirectory(prefix="bench-codegen-") as tmp:
        out = Path(tmp)
        child = _render_write(path, out, render_timeout) if render else None
        times["codegen"] = child["codegen_s"] if child else None
        times["check"], stale = _timed(partial(check, reg, path, out))
        info = {
            "files": sum(1 for p in out.rglob("*") if p.is_file()),
            "not_rendered": child["not_rendered"] if child else None,
            "stale_after_write": len(stale),
            "notes": child["notes"] if child else [],
        }
    with tempfile.TemporaryDirectory(prefix="bench-codegen-") as tmp:
        times["no_render"], report = _timed(partial(write, reg, path, Path(tmp), render=False))
        info["notes"] = report.notes
        info["files_no_render"] = sum(1 for p in Path(tmp).rglob("*") if p.is_file())
    return reg, times, info


def _median(values: list[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return statistics.median(done) if done and len(done) == len(values) else None


def bench(label: str, path: Path, repeat: int, render_timeout: float) -> dict[str, Any]:
    """Median timings of validate, codegen (with and without rendering) and check. After
    a rendering run times out, later runs skip rendering (the figure is then None)."""
    runs: dict[str, list[float | None]] = {
        k: [] for k in ("validate", "codegen", "no_render", "check")
    }
    render = True
    for _ in range(repeat):
        reg, times, info = _one_run(path, render_timeout, render)
        for key, value in times.items():
            runs[key].append(value)
        render = render and times["codegen"] is not None
    return {
        "registry": label,
        "events": len(reg.events),
        "services": len(reg.services),
        "states": len(reg.state_machine.states),
        "validate_s": _median(runs["validate"]),
        "codegen_s": _median(runs["codegen"]),
        "codegen_no_render_s": _median(runs["no_render"]),
        "check_s": _median(runs["check"]),
        "render_timed_out": not render,
        "render_timeout_s": render_timeout,
        **info,
        "runs": runs,
    }


_COLUMNS = (
    "registry",
    "events",
    "services",
    "validate_s",
    "codegen_s",
    "codegen_no_render_s",
    "check_s",
    "files",
)


def _cell(row: dict[str, Any], name: str) -> str:
    value = row[name]
    if name == "codegen_s" and value is None:
        return f">{row['render_timeout_s']:g} (timeout)"
    if name == "files" and row["render_timed_out"]:
        return f"{row['files_no_render']}*"
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results as an aligned text table."""
    cells = [list(_COLUMNS)] + [[_cell(row, name) for name in _COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(_COLUMNS))]
    for n, r in enumerate(cells):
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        print("  ".join(padded))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _remarks(row: dict[str, Any]) -> list[str]:
    extra = []
    if row["render_timed_out"]:
        extra.append(
            f"rendering did not finish within {row['render_timeout_s']:g} s (Graphviz `dot`); "
            "files* counts the --no-render output"
        )
    elif row["not_rendered"]:
        extra.append(f"{row['not_rendered']} SVG(s) not rendered (Graphviz missing?)")
    if row["stale_after_write"] and not row["render_timed_out"]:
        extra.append(f"check found {row['stale_after_write']} stale file(s) after write")
    extra.extend(row["notes"])
    return extra


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (and write JSON if asked)."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == [_CHILD_FLAG] and len(argv) == 3:
        return _child_write(argv[1], argv[2])
    # Turn SIGTERM (e.g. from `timeout`) into an exit, so that the child process group
    # of a rendering run is killed on the way out instead of being left behind.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events of the generated registry")
    parser.add_argument("--services", type=int, default=100, help="its services")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--render-timeout",
        type=float,
        default=60.0,
        help="seconds allowed to one rendering codegen run (0: no limit)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        generate_registry(args.events, args.services)
    except ValueError as exc:
        parser.error(str(exc))

    rows = [bench("seed", SEED, args.repeat, args.render_timeout)]
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        generated = Path(tmp) / "generated.yaml"
        write_generated(generated, args.events, args.services)
        label = f"generated-{args.events}x{args.services}"
        rows.append(bench(label, generated, args.repeat, args.render_timeout))

    print_table(rows)
    for row in rows:
        for remark in _remarks(row):
            print(f"{row['registry']}: {remark}")
    big = rows[-1]
    validate_s: float = big["validate_s"]
    no_render = validate_s + big["codegen_no_render_s"]
    if big["codegen_s"] is None:
        under = False
        total = f"> {validate_s + big['render_timeout_s']:.2f} s (rendering timed out)"
    else:
        under = validate_s + big["codegen_s"] < BUDGET_S
        total = f"{validate_s + big['codegen_s']:.2f} s"
    print(
        f"{big['registry']}: validate + codegen = {total}; under {BUDGET_S:g} s: "
        f"{'yes' if under else 'NO'} (validate + codegen without rendering: {no_render:.2f} s, "
        f"under {BUDGET_S:g} s: {'yes' if no_render < BUDGET_S else 'NO'})"
    )
    if args.json is not None:
        payload = {"budget_s": BUDGET_S, "under_budget": under, "results": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
