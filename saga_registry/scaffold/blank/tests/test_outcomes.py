"""One test per way the saga can end (its outcome paths, known from the registry).

This file is yours: `saga codegen` wrote it once and never overwrites it. The `saga`
fixture (the engine's pytest plugin) runs every service of the registry in this process
on a temporary embedded bus and databases; `pytest --saga-bus kafka://HOST:PORT` runs the
same tests on Kafka.
"""

from __future__ import annotations

from handlers.events import SignupRequested
from saga_registry.testing import SagaHarness


def request(signup_id: str, email: str = "ada@example.com", amount: int = 900) -> SignupRequested:
    return SignupRequested(signup_id=signup_id, email=email, plan="basic", amount=amount)


async def test_completed(saga: SagaHarness) -> None:
    """Outcome `completed`: SignupRequested -> CardCharged -> AccountOpened -> SignupCompleted."""
    result = await saga.run_outcome("completed", request("s1"))
    assert result.event("SignupCompleted").account_id == "acc-s1"


async def test_cancelled_after_charge_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_charge_failed`: a charge over the card's limit is declined."""
    result = await saga.run_outcome("cancelled_after_charge_failed", request("s2", amount=50_000))
    assert result.event("ChargeFailed").reason == "card_declined"


async def test_cancelled_after_account_failed(saga: SagaHarness) -> None:
    """Outcome `cancelled_after_account_failed`: the e-mail is taken, so the charge is
    refunded before the signup is cancelled."""
    await saga.run_outcome("completed", request("s3", email="bob@example.com"))
    result = await saga.run_outcome(
        "cancelled_after_account_failed", request("s4", email="Bob@example.com")
    )
    assert result.event("AccountFailed").reason == "email_taken"
    assert result.event("ChargeRefunded").amount == 900


async def test_an_unanswered_review_times_out_after_30_s(saga: SagaHarness) -> None:
    """The registry's deadline: Accounts defers an address under review and nobody
    answers within 30 s, so the engine emits AccountFailed (timeout) and the charge is
    refunded. The fake clock moves instead of the test sleeping."""
    run = await saga.start(request("s5", email="eve@review.example"))
    await saga.advance(31)
    result = await run.wait()
    assert result.state == "cancelled"
    assert result.event("AccountFailed").reason == "timeout"
    assert result.event("ChargeRefunded").amount == 900
