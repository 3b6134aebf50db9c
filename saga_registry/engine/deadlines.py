"""Arming registry deadlines: a service writes the timer rows of the deadlines it fires
(those whose event it produces) in the transaction that moves a saga into their state,
and drops them in the transaction that moves the saga out. `DeadlineTimers` fires them.

A deadline counts from the commit that moved the saga into its state, not from when the
delivery began: a batch whose reactions take seconds would otherwise arm its timers
seconds early. So a transaction only collects the timers it arms (`PendingTimers`) and
writes them as its very last statement, due `within_s` after the time taken right then;
what is left between that time and the commit is the commit itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import tables
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.machine import SagaMachine, Step
from saga_registry.registry.model import Registry

_DROP = delete(tables.timers).where(tables.timers.c.saga_id == bindparam("saga_id"))
_ARM = insert(tables.timers)


@dataclass(slots=True)
class PendingTimers:
    """The timers one transaction arms, written by `write` at its end."""

    by_saga: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)
    """Each saga's deadlines to arm: key, state, within_s."""

    async def write(self, conn: AsyncConnection, now: float | None = None) -> None:
        """Write the pending timers, due `within_s` after `now` (default: this moment);
        call it as the transaction's last statement, just before the commit."""
        if not self.by_saga:
            return
        # The time is taken after everything else of the transaction was written.
        start = time.time() if now is None else now
        rows = [
            {
                "saga_id": saga,
                "deadline": key,
                "state": state,
                "due_at": start + within,
                "within_s": within,
            }
            for saga, armed in self.by_saga.items()
            for key, state, within in armed
        ]
        await conn.execute(_ARM, rows)
        self.by_saga.clear()


class DeadlineArming:
    """The deadlines service `service` fires, and how a saga's step arms them."""

    def __init__(self, registry: Registry, service: str, machine: SagaMachine) -> None:
        self.machine = machine
        deadlines = registry.state_machine.deadlines
        self.own = {d.key for d in deadlines if registry.event(d.emit).producer == service}
        """Keys of the deadlines this service fires."""
        self._states = {d.state for d in deadlines if d.key in self.own}

    async def arm(
        self,
        conn: AsyncConnection,
        saga_id: str,
        step: Step,
        emitted: Envelope | None,
        pending: PendingTimers,
    ) -> None:
        """Drop the saga's timer of the state `step` left (in `conn`'s transaction) and
        add the deadlines of the state it entered to `pending`; `emitted` is what the
        reaction emitted, if anything."""
        state = step.target
        if state is None or not self.own:
            return
        if step.source not in self._states and state not in self._states:
            # Neither state has a deadline of ours: no timer of this saga can be pending,
            # but for one a registry edit left behind, which fire_due drops unfired.
            return
        await conn.execute(_DROP, {"saga_id": saga_id})
        pending.by_saga.pop(saga_id, None)
        # A deadline waits for the saga to leave the state; if this very reaction already
        # emitted the event that leaves it, there is nothing to wait for.
        if emitted is not None and self.machine.step(state, emitted.type).allowed:
            return
        armed = [
            (deadline.key, state, deadline.within_s)
            for deadline in self.machine.deadlines_in(state)
            if deadline.key in self.own
        ]
        if armed:
            pending.by_saga[saga_id] = armed
