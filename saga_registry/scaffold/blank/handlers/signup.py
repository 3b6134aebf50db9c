"""The reactions of 'Signup': close each signup, completed or cancelled.

This module is yours: `saga codegen` wrote it once and never overwrites it. A saga begins
with `saga start SignupRequested --data '{"email": ..., "plan": ..., "amount": ...}'`,
which this service emits (it `initiates` SignupRequested in the registry).
"""

from __future__ import annotations

from handlers.base.signup import SignupBase
from handlers.events import (
    AccountOpened,
    ChargeFailed,
    ChargeRefunded,
    SignupCancelled,
    SignupCompleted,
)
from saga_registry.engine import ReactionContext


class Signup(SignupBase):
    """Turns the outcome of billing and accounts into the end of the signup."""

    async def on_account_opened(self, event: AccountOpened, ctx: ReactionContext) -> SignupCompleted:
        return SignupCompleted(signup_id=event.signup_id, account_id=event.account_id)

    async def on_charge_failed(self, event: ChargeFailed, ctx: ReactionContext) -> SignupCancelled:
        return SignupCancelled(signup_id=event.signup_id, cause="ChargeFailed")

    async def on_charge_refunded(
        self, event: ChargeRefunded, ctx: ReactionContext
    ) -> SignupCancelled:
        return SignupCancelled(signup_id=event.signup_id, cause="AccountFailed")
