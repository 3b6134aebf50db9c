"""The harness, as a project's tests use it: `saga.service(name)` and `saga.database(name)`
reach a running service's own object and database, and a saga that waits on a deadline
the test never moved the clock to says so when it times out."""

from __future__ import annotations

from pathlib import Path

from tests.test_harness import (
    APPROVAL,
    APPROVAL_HANDLERS,
    _dedent,
    counts,
    make_project,
    report,
    run_pytest,
)


def _approvals(tmp_path: Path) -> Path:
    registry = tmp_path / "approval.yaml"
    registry.write_text(APPROVAL)
    return make_project(tmp_path / "approvals", registry, APPROVAL_HANDLERS)


def test_a_saga_waiting_on_a_deadline_says_to_advance_the_clock(tmp_path: Path) -> None:
    tests = _dedent("""
        from handlers.events import ApprovalRequested

        async def test_waits_a_day(saga):
            await (await saga.start(ApprovalRequested(request_id="r1", amount=500))).wait(0.5)

        async def test_waits_the_rest_of_the_day(saga):
            run = await saga.start(ApprovalRequested(request_id="r2", amount=500))
            await saga.advance(86000)
            await run.wait(0.5)

        async def test_small_amounts_wait_for_nothing(saga):
            await (await saga.start(ApprovalRequested(request_id="r3", amount=5))).wait(0.5)
    """)
    result = run_pytest(_approvals(tmp_path), tests)
    assert counts(result) == {"passed": 1, "failed": 2}, report(result)
    assert (
        "saga r1 did not end within 0.5s: states Desk=pending, Approver=pending; "
        "events ApprovalRequested; a deadline is pending in state pending (due in 86400s on "
        "the harness clock): call `await saga.advance(86400)` first" in result.stdout
    ), report(result)
    # What is left of the wait, on the clock the test moved.
    assert (
        "a deadline is pending in state pending (due in 400s on the harness clock): "
        "call `await saga.advance(400)` first" in result.stdout
    ), report(result)


def test_service_and_database_reach_a_running_service(tmp_path: Path) -> None:
    tests = _dedent("""
        from sqlalchemy import select

        from handlers.approver import Approver
        from handlers.events import ApprovalRequested
        from saga_registry.engine import tables
        from saga_registry.engine.database import Database

        async def test_the_user_s_objects(saga):
            approver = saga.service("Approver")
            assert type(approver) is Approver
            assert approver.service_name == "Approver"
            await (await saga.start(ApprovalRequested(request_id="r1", amount=5))).wait()
            db = saga.database("Desk")
            assert isinstance(db, Database)
            async with db.transaction() as conn:
                state = await conn.scalar(
                    select(tables.saga_state.c.state).where(tables.saga_state.c.saga_id == "r1")
                )
            assert state == "approved"

        async def test_an_unknown_service(saga):
            saga.service("Aprover")

        async def test_an_unknown_database(saga):
            saga.database("desk")
    """)
    result = run_pytest(_approvals(tmp_path), tests)
    assert counts(result) == {"passed": 1, "failed": 2}, report(result)
    assert "unknown service 'Aprover' (did you mean 'Approver'?)" in result.stdout, report(result)
    assert "unknown service 'desk' (did you mean 'Desk'?)" in result.stdout, report(result)
