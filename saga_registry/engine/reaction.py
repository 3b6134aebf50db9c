"""What a reaction receives besides its event: the context of one delivery."""

from __future__ import annotations

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
