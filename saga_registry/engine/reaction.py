"""What a reaction receives besides its event: the context of one delivery."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.registry.model import Deadline


class ReactionContext(Protocol):
    """The delivery being handled, and the transaction its effects go into.

    Everything a reaction writes through `db` commits atomically with the inbox row
    (dedupe) and the outbox rows of the event it returns; raising rolls all of it back.
    """

    @property
    def saga_id(self) -> str:
        """The saga key of the event (the record key on the bus)."""
        ...

    @property
    def event_id(self) -> str:
        """The id of the event being handled (CloudEvents `id`)."""
        ...

    @property
    def service(self) -> str:
        """The name of the service handling the event."""
        ...

    @property
    def db(self) -> AsyncConnection:
        """The service's database connection, inside the reaction's transaction."""
        ...

    @property
    def state(self) -> str:
        """The state the event moved the saga into (a reaction runs only for an event
        that moves its saga)."""
        ...

    @property
    def deadlines(self) -> tuple[Deadline, ...]:
        """The registry's deadlines of `state`, whichever service fires them: each
        `within_s` seconds (counted from this delivery's commit) and the event it `emit`s
        if the saga is still in `state` then. A reaction that defers its answer can use
        them to bound its own wait (e.g. a provider call's timeout)."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """The `ReactionContext` the runner gives a reaction."""

    saga_id: str
    event_id: str
    service: str
    db: AsyncConnection
    state: str
    deadlines: tuple[Deadline, ...]


_IN_REACTION: ContextVar[str | None] = ContextVar("saga_in_reaction", default=None)
"""Which reaction the current task is running, if any."""


@contextmanager
def inside_reaction(label: str) -> Iterator[None]:
    """Mark the current task as running the reaction `label` for the block."""
    token = _IN_REACTION.set(label)
    try:
        yield
    finally:
        _IN_REACTION.reset(token)


def outside_reactions(call: str) -> None:
    """Raise `RuntimeError` if `call` is made from inside a reaction. A reaction holds its
    service's connection (SQLite has one): a second transaction from inside it would wait
    for itself, or read the state from before the reaction."""
    reaction = _IN_REACTION.get()
    if reaction is not None:
        raise RuntimeError(
            f"{call} was called inside {reaction}: a reaction returns the event it emits "
            "and writes through ctx.db; answer() is for later, outside any reaction"
        )
