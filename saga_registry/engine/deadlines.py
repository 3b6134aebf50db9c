"""Arming registry deadlines: a service writes the timer rows of the deadlines it fires
(those whose event it produces) in the transaction that moves a saga into their state,
and drops them in the transaction that moves the saga out. `DeadlineTimers` fires them."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine import tables
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.machine import SagaMachine, Step
from saga_registry.registry.model import Registry

_DROP = delete(tables.timers).where(tables.timers.c.saga_id == bindparam("saga_id"))
_ARM = insert(tables.timers)


class DeadlineArming:
    """The deadlines service `service` fires, and how a saga's step arms them."""

    def __init__(self, registry: Registry, service: str, machine: SagaMachine) -> None:
        self.machine = machine
        deadlines = registry.state_machine.deadlines
        self.own = {
            i for i, d in enumerate(deadlines) if registry.event(d.emit).producer == service
        }
        """Registry indexes of the deadlines this service fires."""
        self._states = {d.state for i, d in enumerate(deadlines) if i in self.own}

    async def arm(
        self,
        conn: AsyncConnection,
        saga_id: str,
        step: Step,
        emitted: Envelope | None,
        now: float,
    ) -> None:
        """Arm the deadlines of the state `step` entered, dropping the timer of the state it
        left, in `conn`'s transaction; `emitted` is what the reaction emitted, if anything."""
        state = step.target
        if state is None or not self.own:
            return
        # A deadline waits for the saga to leave the state; if this very reaction already
        # emitted the event that leaves it, there is nothing to wait for.
        if emitted is not None and self.machine.step(state, emitted.type).allowed:
            return
        if step.source not in self._states and state not in self._states:
            # Neither state has a deadline of ours: no timer of this saga can be pending,
            # but for one a registry edit left behind, which fire_due drops unfired.
            return
        await conn.execute(_DROP, {"saga_id": saga_id})
        for index, deadline in self.machine.deadlines_in(state):
            if index in self.own:
                await conn.execute(
                    _ARM,
                    {
                        "saga_id": saga_id,
                        "deadline": index,
                        "state": state,
                        "due_at": now + deadline.within_s,
                    },
                )
