"""Deferred answers given by the service itself (`ServiceBase.answer`, from a poller its
`start` hook runs), one correlation id over a saga's whole life, deadlines counted from
the commit that entered their state, and what a reaction learns of that state.

The project is generated here from a small registry (a Front that starts jobs, a Worker
whose reaction defers its answer, a deadline on the wait) into a package of its own name,
so that it imports beside the checkout's `handlers`."""

from __future__ import annotations

import asyncio
import importlib
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from saga_registry.codegen import write
from saga_registry.engine import tables
from saga_registry.engine.app import Application
from saga_registry.engine.bus import TopicSpec
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.config import Settings
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import ForbiddenEmit
from saga_registry.engine.runner import RunnerSettings, ServiceRunner
from saga_registry.engine.timers import DeadlineTimers
from saga_registry.registry import Registry, load_registry

REGISTRY = """\
version: 1
saga:
  name: jobs
  title: Jobs answered later
  key: job_id
  pattern: Saga choreography
topics:
  events: {name: TAG.jobs.events, partitions: 2}
  dead_letter: {name: TAG.jobs.dlq, partitions: 1}
services:
  Front:
    description: Starts jobs and closes them.
    initiates: [JobRequested]
    reacts:
      JobDone: {emits: [JobClosed]}
      JobFailed: {emits: [JobCancelled]}
  Worker:
    description: Takes a job and answers later, from a poller.
    reacts:
      JobRequested:
        emits: [JobDone, JobFailed]
        defer: true
events:
  JobRequested:
    kind: domain
    producer: Front
    stage: {en: a job is asked for}
    payload: {required: [job_id], properties: {job_id: {type: string}}}
  JobDone:
    kind: domain
    producer: Worker
    stage: {en: the job is done}
    payload: {required: [job_id], properties: {job_id: {type: string}}}
  JobFailed:
    kind: failure
    producer: Worker
    stage: {en: the job failed}
    payload:
      required: [job_id, reason]
      properties: {job_id: {type: string}, reason: {type: string}}
  JobCancelled:
    kind: compensation
    producer: Front
    stage: {en: the job is cancelled}
    payload: {required: [job_id], properties: {job_id: {type: string}}}
  JobClosed:
    kind: domain
    producer: Front
    stage: {en: the job is closed}
    payload: {required: [job_id], properties: {job_id: {type: string}}}
state_machine:
  initial: new
  states:
    new: {description: Nothing yet.}
    waiting: {description: Waiting for the worker.}
    done: {description: Done.}
    failed: {description: Failed.}
    closed: {description: Closed., terminal: true, outcome: success}
    cancelled: {description: Cancelled., terminal: true, outcome: failure}
  transitions:
    - {on: JobRequested, from: new, to: waiting}
    - {on: JobDone, from: waiting, to: done}
    - {on: JobFailed, from: waiting, to: failed}
    - {on: JobClosed, from: done, to: closed}
    - {on: JobCancelled, from: failed, to: cancelled}
  deadlines:
    - state: waiting
      within_s: WITHIN
      emit: JobFailed
      payload: {reason: timeout}
"""

FRONT = """\
from PKG.base.front import FrontBase
from PKG.events import JobCancelled, JobClosed, JobDone, JobFailed
from saga_registry.engine.service import ServiceBase


class Front(FrontBase, ServiceBase):
    async def on_job_done(self, event: JobDone, ctx: object) -> JobClosed:
        return JobClosed(job_id=event.job_id)

    async def on_job_failed(self, event: JobFailed, ctx: object) -> JobCancelled:
        return JobCancelled(job_id=event.job_id)
"""

# The Worker stores each request and returns None; a poller its `start` hook runs answers
# the stored requests later (but never a job named slow-*: its deadline fires).
WORKER = """\
import asyncio
import contextlib
import time

from sqlalchemy import Column, MetaData, String, Table, insert, select, update

from PKG.base.worker import WorkerBase
from PKG.events import JobDone, JobRequested
from saga_registry.engine.errors import ForbiddenEmit
from saga_registry.engine.service import ServiceBase

metadata = MetaData()
requests = Table(
    "requests",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
)


class Worker(WorkerBase, ServiceBase):
    metadata = metadata
    delay_s = 0.0
    poll = True

    def __init__(self) -> None:
        self.seen = []
        self.task = None

    async def on_job_requested(self, event: JobRequested, ctx: object) -> None:
        self.seen.append((event.job_id, ctx.state, ctx.deadlines))
        time.sleep(self.delay_s)  # a slow call, holding the delivery's transaction
        await ctx.db.execute(insert(requests).values(job_id=event.job_id, status="pending"))
        return None

    async def start(self) -> None:
        if self.poll:
            self.task = asyncio.create_task(self.poller())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def poller(self) -> None:
        while True:
            async with self.transaction() as conn:
                pending = (
                    await conn.execute(
                        select(requests.c.job_id).where(requests.c.status == "pending")
                    )
                ).scalars().all()
            for job in pending:
                if job.startswith("slow"):
                    continue
                await self.answer(JobDone(job_id=job), mark(job, "answered"))
            await asyncio.sleep(0.05)


def mark(job, status):
    async def effects(conn):
        await conn.execute(update(requests).where(requests.c.job_id == job).values(status=status))

    return effects
"""


@dataclass
class Project:
    root: Path
    package: str
    registry: Registry
    within_s: float

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{self.package}.{name}")

    def event(self, kind: str, **fields: Any) -> Any:
        return self.module("events").EVENT_TYPES[kind].from_dict(fields)


def make_project(tmp_path: Path, within_s: float = 1.0, second_deadline_s: float = 0) -> Project:
    """The jobs project, generated into a package named uniquely, on fresh topics; with a
    second, later deadline on the same wait if `second_deadline_s`."""
    tag = uuid.uuid4().hex[:8]
    package = f"jobs_{tag}"
    root = tmp_path / "project"
    (root / "registry").mkdir(parents=True)
    path = root / "registry" / "saga.yaml"
    text = REGISTRY.replace("TAG", f"t{tag}").replace("WITHIN", str(within_s))
    if second_deadline_s:
        text += (
            "    - name: much_too_late\n      state: waiting\n"
            f"      within_s: {second_deadline_s}\n"
            "      emit: JobFailed\n      payload: {reason: much too late}\n"
        )
    path.write_text(text)
    registry = load_registry(path)
    write(registry, path, root, render=False)
    (root / "handlers").rename(root / package)
    for module in (root / package).rglob("*.py"):
        text = re.sub(r"(?<![\w.])handlers\.", f"{package}.", module.read_text())
        module.write_text(text)
    (root / package / "front.py").write_text(FRONT.replace("PKG", package))
    (root / package / "worker.py").write_text(WORKER.replace("PKG", package))
    return Project(root, package, registry, within_s)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = make_project(tmp_path)
    sys.path.insert(0, str(made.root))
    yield made
    sys.path.remove(str(made.root))
    for name in [m for m in sys.modules if m.split(".")[0] == made.package]:
        del sys.modules[name]


def application(project: Project, tmp_path: Path) -> Application:
    settings = Settings(
        db=f"sqlite:///{tmp_path}/{{service}}.db",
        package=project.package,
        runner=RunnerSettings(poll_timeout_s=0.05, backoff_s=0.01),
    )
    bus = EmbeddedBus(tmp_path / "bus.db")
    return Application(settings, registry=project.registry, bus=bus)


async def front_states(app: Application) -> dict[str, str]:
    front = next(s for s in app.services if s.runner.name == "Front")
    async with front.db.transaction() as conn:
        rows = await conn.execute(select(tables.saga_state.c.saga_id, tables.saga_state.c.state))
        return {r.saga_id: r.state for r in rows}


async def test_a_service_answers_later_and_the_saga_keeps_one_correlation_id(
    project: Project, tmp_path: Path
) -> None:
    app = application(project, tmp_path)
    await app.start()
    stop = asyncio.Event()
    run = asyncio.create_task(app.run(stop))
    try:
        front = next(s for s in app.services if s.runner.name == "Front")
        for job in ("quick-1", "slow-1"):
            await front.runner.initiate(project.event("JobRequested", job_id=job))
        limit = time.monotonic() + 30
        while await front_states(app) != {"quick-1": "closed", "slow-1": "cancelled"}:
            assert time.monotonic() < limit, await front_states(app)
            await asyncio.sleep(0.05)
        worker = next(s.service for s in app.services if s.runner.name == "Worker")
        # The deadline took the slow job: the Worker's late answer is refused, unwritten.
        with pytest.raises(ForbiddenEmit, match="too late"):
            await worker.answer(project.event("JobDone", job_id="slow-1"))
        # Only the answers of its deferred reaction are the Worker's to give.
        with pytest.raises(ForbiddenEmit, match="may not answer with JobClosed"):
            await worker.answer(project.event("JobClosed", job_id="quick-1"))
    finally:
        stop.set()
        await run
        assert app.bus is not None
        records = [
            Envelope.from_record(d.record)
            for d in await app.bus.read_all(project.registry.events_topic.name)
        ]
        await app.stop()
    by_saga: dict[str, dict[str, Envelope]] = {}
    for env in records:
        assert env.type not in by_saga.setdefault(env.saga_id, {}), f"two {env.type}"
        by_saga[env.saga_id][env.type] = env
    quick, slow = by_saga["quick-1"], by_saga["slow-1"]
    assert list(quick) == ["JobRequested", "JobDone", "JobClosed"]
    assert list(slow) == ["JobRequested", "JobFailed", "JobCancelled"]
    assert quick["JobDone"].source.endswith("/Worker"), "answered by the Worker's poller"
    assert slow["JobFailed"].source.endswith("/Worker/deadline"), "fired by the deadline"
    for saga in (quick, slow):
        first = saga["JobRequested"]
        assert {e.correlation_id for e in saga.values()} == {first.id}
    # Each names its cause: the answer and the deadline event the request that moved the
    # saga into `waiting`, and the reactions after them the event they reacted to.
    assert quick["JobDone"].causation_id == quick["JobRequested"].id
    assert quick["JobClosed"].causation_id == quick["JobDone"].id
    assert slow["JobFailed"].causation_id == slow["JobRequested"].id
    assert slow["JobCancelled"].causation_id == slow["JobFailed"].id


async def test_an_answer_is_committed_with_its_effects_once_answer_returns(
    project: Project, tmp_path: Path
) -> None:
    worker = project.module("worker").Worker()
    request = project.event("JobRequested", job_id="j1")
    with pytest.raises(RuntimeError, match="Worker is not running"):
        await worker.answer(project.event("JobDone", job_id="j1"))
    runner, db, bus = await bare_runner(project, tmp_path, worker)
    try:
        await deliver(runner, bus, request)
        answered = await worker.answer(
            project.event("JobDone", job_id="j1"), project.module("worker").mark("j1", "done")
        )
        with pytest.raises(ForbiddenEmit, match="answered already"):
            await worker.answer(project.event("JobDone", job_id="j1"))
        with pytest.raises(ForbiddenEmit, match="never saw that saga"):
            await worker.answer(project.event("JobDone", job_id="nobody"))
    finally:
        await db.stop()
        await bus.stop()
    # Read by another connection once the service's database is closed: committed.
    with sqlite3.connect(tmp_path / "worker.db") as conn:
        assert conn.execute("SELECT event_id FROM saga_outbox").fetchall() == [(answered.id,)]
        assert conn.execute("SELECT status FROM requests").fetchall() == [("done",)]
        assert conn.execute("SELECT count(*) FROM saga_deadline_timers").fetchone() == (0,)


async def bare_runner(
    project: Project, tmp_path: Path, service: Any, within_s: float | None = None
) -> tuple[ServiceRunner, Database, EmbeddedBus]:
    """`service`'s runner on its own database and the project's bus; nothing runs."""
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    reg = project.registry
    await bus.ensure_topics([TopicSpec(reg.events_topic.name, reg.events_topic.partitions)])
    db = Database(database_url(f"sqlite:///{tmp_path}/{{service}}.db", "Worker"), service.metadata)
    await db.start()
    types = project.module("events").EVENT_TYPES
    return ServiceRunner(reg, service, types, db, bus), db, bus


async def deliver(runner: ServiceRunner, bus: EmbeddedBus, *events: Any) -> float:
    """Publish `events`, handle them as one poll batch; the time right after its commit."""
    envs = [
        Envelope.new(type=e.event_type, source="tests", saga_id=e.saga_id(), data=e.to_json())
        for e in events
    ]
    await bus.publish([x.to_record(runner.topic) for x in envs])
    subscription = await bus.subscribe(runner.group, [runner.topic])
    batch: list[Any] = []
    while len(batch) < len(events):
        batch += await subscription.fetch(len(events) - len(batch), 1.0)
    await runner.handle_batch(batch)
    committed = time.time()
    await subscription.commit(batch)
    await subscription.close()
    return committed


@pytest.mark.parametrize("jobs", [4, 1], ids=["batch", "one_by_one"])
async def test_a_deadline_counts_from_the_commit_that_entered_its_state(
    project: Project, tmp_path: Path, jobs: int
) -> None:
    worker = project.module("worker").Worker()
    worker.delay_s = 0.3  # each reaction takes 0.3 s: a batch of 4 commits 1.2 s late
    runner, db, bus = await bare_runner(project, tmp_path, worker)
    try:
        requests = [project.event("JobRequested", job_id=f"j{i}") for i in range(jobs)]
        began = time.time()
        committed = await deliver(runner, bus, *requests)
        assert committed - began >= 0.3 * jobs
        async with db.transaction() as conn:
            due = (await conn.execute(select(tables.timers.c.due_at))).scalars().all()
    finally:
        await db.stop()
        await bus.stop()
    assert len(due) == jobs
    for at in due:
        # Armed at most the commit's own duration before it, never at the batch's start.
        assert committed - 0.2 <= at - project.within_s <= committed


async def test_a_reaction_sees_the_state_it_entered_and_its_deadlines(
    project: Project, tmp_path: Path
) -> None:
    worker = project.module("worker").Worker()
    runner, db, bus = await bare_runner(project, tmp_path, worker)
    try:
        await deliver(runner, bus, project.event("JobRequested", job_id="j1"))
    finally:
        await db.stop()
        await bus.stop()
    ((job, state, deadlines),) = worker.seen
    assert (job, state) == ("j1", "waiting")
    assert [(d.state, d.within_s, d.emit) for d in deadlines] == [
        ("waiting", project.within_s, "JobFailed")
    ]
    assert deadlines == project.registry.state_machine.deadlines


async def test_once_one_deadline_fired_a_late_answer_is_refused(tmp_path: Path) -> None:
    """Two deadlines on one wait: the first to fire owns the way out, so neither the
    second deadline nor a late answer can count any more."""
    made = make_project(tmp_path, within_s=0.2, second_deadline_s=100)
    sys.path.insert(0, str(made.root))
    try:
        worker = made.module("worker").Worker()
        runner, db, bus = await bare_runner(made, tmp_path, worker)
        try:
            await deliver(runner, bus, made.event("JobRequested", job_id="j1"))
            timers = DeadlineTimers(runner)
            assert await timers.fire_due(now=time.time() + 1) == 1
            with pytest.raises(ForbiddenEmit, match="too late"):
                await worker.answer(made.event("JobDone", job_id="j1"))
            assert await timers.fire_due(now=time.time() + 1000) == 0
        finally:
            await db.stop()
            await bus.stop()
    finally:
        sys.path.remove(str(made.root))


async def test_answering_from_inside_a_reaction_is_refused_at_once(
    project: Project, tmp_path: Path
) -> None:
    """A reaction holds its service's only SQLite connection: `answer()` from inside it
    would wait for itself. It is refused, naming the reaction, instead."""
    worker = project.module("worker").Worker()

    async def answers_at_once(event: Any, ctx: Any) -> None:
        await worker.answer(project.event("JobDone", job_id=event.job_id))

    worker.on_job_requested = answers_at_once
    runner, db, bus = await bare_runner(project, tmp_path, worker)
    try:
        request = project.event("JobRequested", job_id="j1")
        env = Envelope.new(
            type="JobRequested", source="tests", saga_id="j1", data=request.to_json()
        )
        step = runner.machine.step(runner.machine.initial, "JobRequested")
        async with db.transaction() as conn:
            with pytest.raises(RuntimeError, match="inside Worker's reaction to JobRequested"):
                await asyncio.wait_for(runner.react(conn, env, request, step), 5)
    finally:
        await db.stop()
        await bus.stop()
