"""`python -m chaos`: run the checkout under chaos and judge the final state."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from chaos.errors import ChaosError
from chaos.run import Outcome, Plan, run


@click.command()
@click.option(
    "--bus", type=click.Choice(["kafka", "embedded"]), default="embedded", show_default=True
)
@click.option("--sagas", default=500, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--kills", default=5, show_default=True, type=click.IntRange(0, 10_000))
@click.option(
    "--broker-restarts",
    default=0,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Kafka only: SIGKILL and restart the broker this many times.",
)
@click.option("--seed", default=1, show_default=True, help="Seed of every random choice.")
@click.option(
    "--rate",
    default=50.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Orders placed per second.",
)
@click.option(
    "--poison",
    "poison_volleys",
    default=3,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Volleys of hostile records (one of each kind per volley).",
)
@click.option(
    "--quiet-timeout",
    "quiet_timeout_s",
    default=180.0,
    show_default=True,
    help="Seconds without progress after which the run stops waiting for quiescence.",
)
@click.option(
    "--restart-timeout",
    "restart_timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds a broker restart may take to answer; a slower or failed restart is "
    "reported as a problem of the run, which goes on to its verdict.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report here.")
@click.option("--keep", is_flag=True, help="Keep the run's databases and logs.")
def main(
    bus: str,
    sagas: int,
    kills: int,
    broker_restarts: int,
    seed: int,
    rate: float,
    poison_volleys: int,
    quiet_timeout_s: float,
    restart_timeout_s: float,
    json_path: str | None,
    keep: bool,
) -> None:
    """Run SAGAS checkout sagas, each service in its own OS process, while services are
    SIGKILLed and restarted, the broker is restarted and poison records are written; then
    check the invariants of docs/checkout.md over the final state. Exit status 1 if
    anything is lost, stuck, doubled or not conserved."""
    if broker_restarts and bus != "kafka":
        raise click.BadParameter(
            "only a Kafka broker can be restarted", param_hint="--broker-restarts"
        )
    # The driver's own Kafka clients complain through every broker restart; what matters
    # is judged by the checker.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    plan = Plan(
        bus,
        sagas,
        kills,
        broker_restarts,
        seed,
        rate,
        poison_volleys,
        quiet_timeout_s,
        restart_timeout_s,
    )
    work = Path(tempfile.mkdtemp(prefix="saga-chaos-"))
    click.echo(
        f"chaos: {sagas} sagas on {bus}, {kills} kills, {broker_restarts} broker restarts, "
        f"seed {seed}; state in {work}",
        err=True,
    )
    try:
        outcome = asyncio.run(run(plan, work))
    except ChaosError as exc:
        # Nothing to judge: the run could not be set up. The report still says so.
        if json_path:
            failed = {"ok": False, "bus": bus, "seed": seed, "problems": [str(exc)]}
            Path(json_path).write_text(json.dumps(failed, indent=2) + "\n", encoding="utf-8")
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    report = outcome.to_json()
    report["state_dir"] = str(work) if keep or not outcome.ok else None
    text = json.dumps(report, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    _print(outcome, report)
    if outcome.ok and not keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if outcome.ok else 1)


def _print(outcome: Outcome, r: dict[str, Any]) -> None:
    click.echo(
        f"\n{r['sagas']} sagas on {r['bus']} in {r['seconds']} s: {r['kills']} kills, "
        f"{r['broker_restarts']} broker restarts, {sum(outcome.poison.values())} poison records"
    )
    for key in (
        "terminal",
        "stuck",
        "lost",
        "double_charges",
        "double_refunds",
        "stock_conserved",
        "money_conserved",
        "snapshots_ok",
        "dlq",
    ):
        click.echo(f"  {key:<17} {r[key]}")
    click.echo("outcomes: " + ", ".join(f"{k} {n}" for k, n in r["outcomes"].items()))
    for crash in r["crashes"]:
        click.echo(f"  CRASH {crash['service']} exited {crash['exit_code']} on its own")
    for problem in r["problems"]:
        click.echo(f"  FAIL {problem}")
    click.echo("ok" if outcome.ok else f"FAILED (state kept in {r['state_dir']})")


if __name__ == "__main__":
    main()
