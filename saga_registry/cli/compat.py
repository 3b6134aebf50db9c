"""`saga compat`: is this registry safe to deploy on the services running now?
(`saga_registry.engine.compat`.)"""

from __future__ import annotations

import asyncio
import json

import click

from saga_registry.cli.options import (
    bus_option,
    db_option,
    fail,
    kafka_security,
    registry_option,
    registry_or_fail,
)
from saga_registry.engine.buses import KafkaOptions
from saga_registry.engine.compat import Report, check_databases, check_letters
from saga_registry.engine.dead_letters import read_dead_letters
from saga_registry.engine.errors import EngineError

_ORDER = ("sagas in flight", "timers", "unsent events", "held events", "dead letters")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_option
@db_option
@bus_option
@kafka_security
def compat(as_json: bool, registry: str, db: str, bus: str, kafka: KafkaOptions) -> None:
    """Check the registry about to be deployed (--registry) against the live services'
    databases (--db) and the dead-letter topic (--bus): sagas in flight in states it no
    longer has or that can no longer end, pending timers whose deadline vanished or
    changed, and unsent, held or dead-lettered events it could no longer read.

    Exit status 1 when anything would be stranded or unreadable; notices (a deadline's
    new length, timers an older version keeps by index) do not fail it."""
    reg = registry_or_fail(registry)
    report = Report()
    try:
        asyncio.run(check_databases(reg, db, report))
        deliveries, note = asyncio.run(read_dead_letters(reg, bus, kafka))
    except EngineError as exc:
        fail(str(exc))
    if note:
        report.notes.append(note)
    check_letters(reg, deliveries, report)
    if as_json:
        click.echo(json.dumps(report.doc(), indent=2))
    else:
        _print(registry, report)
    if report.breaking:
        raise SystemExit(1)


def _print(registry: str, report: Report) -> None:
    for line in report.notes:
        click.echo(f"note: {line}", err=True)
    findings = sorted(report.findings, key=lambda f: (f.severity != "breaking", f.kind, f.saga_id))
    for f in findings:
        who = f"({', '.join(f.services)})" if f.services else ""
        saga = f"saga {f.saga_id} " if f.saga_id else ""
        click.echo(f"{f.severity:<8}  {f.kind:<15} {saga}{who}: {f.message}")
    read = ", ".join(f"{report.counts.get(what, 0)} {what}" for what in _ORDER)
    if report.breaking:
        n = len(report.breaking)
        verdict = f"{n} problem{'s' if n != 1 else ''}: not safe to deploy"
    else:
        verdict = "safe to deploy"
    click.echo(f"{registry}: read {read}: {verdict}")
