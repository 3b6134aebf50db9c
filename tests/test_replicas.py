"""Two replicas of every service in one consumer group, sharing each service's PostgreSQL
database, on Kafka: one is killed mid-run, the other takes its partitions over, and every
saga ends as the registry says, each event applied once per service."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from saga_registry.engine import tables
from saga_registry.engine.database import Database, database_url
from saga_registry.registry import load_registry
from tests.test_saga_run import make_project, place, start

SAGAS = 60


async def _query(db: str, service: str, stmt: Any) -> list[Any]:
    database = Database(database_url(db, service))
    await database.start()
    try:
        async with database.transaction() as conn:
            return list((await conn.execute(stmt)).all())
    finally:
        await database.stop()


def test_two_replicas_per_service_on_postgres_survive_one_killed(
    tmp_path: Path, kafka_bootstrap: str, pg_url: str
) -> None:
    bus = f"kafka://{kafka_bootstrap}"
    db = pg_url.replace("{service}", f"r{secrets.token_hex(3)}_{{service}}")
    root = make_project(tmp_path)
    reg = load_registry(root / "registry" / "saga.yaml")
    last = reg.services[-1].name
    terminal = set(reg.state_machine.terminal_states)
    outcomes = {s.name: s.outcome for s in reg.state_machine.states}
    replicas = [start(root, "--db", db, bus=bus) for _ in range(2)]
    try:
        time.sleep(8)  # both joined every group: each holds some partitions
        asyncio.run(place(root, SAGAS, bus))
        deadline = time.monotonic() + 120
        ended: dict[str, str] = {}
        killed = False
        while time.monotonic() < deadline:
            rows = asyncio.run(
                _query(db, last, select(tables.saga_state.c.saga_id, tables.saga_state.c.state))
            )
            ended = {saga: state for saga, state in rows if state in terminal}
            if not killed and len(ended) >= SAGAS // 4:
                replicas[0].send_signal(signal.SIGKILL)  # mid-run, mid-transaction maybe
                replicas[0].wait(timeout=30)
                killed = True
            if len(ended) == SAGAS:
                break
            time.sleep(0.5)
        assert killed, "the run ended before a replica could be killed"
        assert len(ended) == SAGAS, f"{len(ended)} of {SAGAS} sagas ended"
        assert all(outcomes[s] == "success" for s in ended.values()), ended
        assert replicas[1].poll() is None, "the surviving replica stopped"
    finally:
        for proc in replicas:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    for service in reg.services:
        dupes = asyncio.run(
            _query(
                db,
                service.name,
                text(
                    "SELECT count(*) FROM (SELECT saga_id, event_type FROM saga_inbox"
                    " GROUP BY saga_id, event_type HAVING count(*) > 1) d"
                ),
            )
        )
        assert dupes[0][0] == 0, f"{service.name} applied an event twice"
        sent = asyncio.run(
            _query(
                db,
                service.name,
                select(func.count(), func.count(tables.outbox.c.event_id.distinct())),
            )
        )
        assert sent[0][0] == sent[0][1], f"{service.name} queued an event twice"
