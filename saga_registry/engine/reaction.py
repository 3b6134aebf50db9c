"""What a reaction receives besides its event: the context of one delivery."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


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
