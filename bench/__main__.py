"""`python -m bench --bus embedded|kafka --sagas N [--rate R] [--json PATH]`.

Runs the checkout saga with the real services (warm-up first, then N measured sagas),
then the bare relay chain on the same bus, and prints and writes the figures. A bad
command line is one line on stderr and exit status 2; a run that fails, one line and 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from bench import baseline
from bench.args import Parser, positive_int, run_in_state
from bench.engine_run import ROOT, Load, run_embedded, run_kafka
from bench.report import figures, table, write_json
from bench.scenario import fresh_registry, happy_path


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return value


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m bench",
        description="Sagas per second and latency of the checkout saga, against the bare "
        "transport on the same bus.",
    )
    p.add_argument("--bus", required=True, choices=("embedded", "kafka"))
    p.add_argument("--sagas", required=True, type=positive_int, help="measured sagas")
    p.add_argument(
        "--rate", type=_positive_float, help="arrival rate, sagas/s (default: as fast as they go)"
    )
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument(
        "--warmup", type=int, help="sagas run before measuring (default: min(200, N/10))"
    )
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("SAGA_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka HOST:PORT (default: $SAGA_KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
    )
    p.add_argument("--registry", type=Path, default=ROOT / "registry" / "saga.yaml")
    p.add_argument("--timeout", type=_positive_float, default=3600.0, help="seconds per phase")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the databases and logs (and, on Kafka, the run's topics)",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="the services serve Prometheus metrics (on a free port), to measure their cost",
    )
    return p


async def _bench(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    run_id = uuid.uuid4().hex[:8]
    registry_path, registry = fresh_registry(args.registry, run_id, state)
    path = happy_path(registry)
    warmup = min(200, args.sagas // 10) if args.warmup is None else args.warmup
    load = Load(args.sagas, warmup, args.rate, args.timeout)
    partitions = registry.events_topic.partitions
    topic = f"bench-{run_id}.baseline"
    print(
        f"bench {run_id}: {args.sagas} sagas on {args.bus}, happy path "
        f"{' -> '.join(path.events)} ({path.hops} consumer hops); state in {state}",
        file=sys.stderr,
    )
    if args.bus == "embedded":
        engine = await run_embedded(registry, registry_path, state, load, args.metrics)
        print("  engine done; baseline (bare relay chain)...", file=sys.stderr)
        base = await baseline.run_embedded(
            state / "baseline.db", topic, partitions, path, args.sagas, warmup, args.timeout
        )
    else:
        engine = await run_kafka(registry, registry_path, state, args.bootstrap, load, args.metrics)
        print("  engine done; baseline (bare relay chain)...", file=sys.stderr)
        base = await baseline.run_kafka(
            args.bootstrap, topic, partitions, path, args.sagas, max(warmup, 1), args.timeout
        )
        if not args.keep:
            names = [registry.events_topic.name, registry.dead_letter_topic.name, topic]
            await baseline.delete_topics(args.bootstrap, names)
    doc = figures(args.bus, args.rate, warmup, path, engine, base)
    doc["machine"]["load_avg_before_1_5_15"] = load_before
    return {**doc, "metrics": args.metrics, "run_id": run_id}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; exit 0 with the figures, 1 if the run failed, 2 on bad usage."""
    args = _parser().parse_args(argv)
    if args.warmup is not None and args.warmup < 0:
        _parser().error(f"--warmup {args.warmup}: must be 0 or more")
    if not args.registry.is_file():
        _parser().error(f"--registry {args.registry}: no such file")
    doc = run_in_state("bench", args.keep, lambda state: _bench(args, state))
    print(table(doc))
    if args.json:
        write_json(doc, args.json)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
