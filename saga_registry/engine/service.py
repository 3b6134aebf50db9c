"""The one seam between generated code and the runtime: every generated service base
subclasses `ServiceBase`, and the runner takes a `ServiceBase`."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_registry.engine.envelope import Envelope

Effects = Callable[[AsyncConnection], Awaitable[None]]
"""Writes of the service's own, run inside the transaction that queues an event."""


class ServiceRuntime(Protocol):
    """What the runner lends a running service (see `ServiceBase.answer`)."""

    async def answer(self, event: Any, effects: Effects | None = None) -> Envelope:
        """Queue the late answer `event` of a deferred reaction; see `ServiceBase.answer`."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction on the service's database, committed when the block ends."""
        ...


class ServiceBase(abc.ABC):
    """A service of a registry. The generated base of each service fills in the class
    variables from the registry; the project's subclass writes the reactions (one
    `async def on_<event>(self, event, ctx)` per consumed event) and may declare:

    - `metadata`: the SQLAlchemy `MetaData` of the service's own tables, created in the
      service's database beside the engine's tables;
    - `options`: the `--set KEY=VALUE` keys it takes, each with a one-line description
      (`saga run` refuses keys no service of the registry declares), given to `configure`;
    - `start` and `stop`: hooks run around the service's run, e.g. to run a poller that
      gives the late answers of deferred reactions through `answer`.
    """

    service_name: ClassVar[str]
    """The service's name in the registry."""
    initiates: ClassVar[tuple[str, ...]] = ()
    """The event types this service may emit to begin a saga."""
    reactions: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({})
    """Each consumed event type and the event types its reaction may emit."""
    handler_names: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """Each consumed event type and the method that reacts to it."""
    metadata: ClassVar[MetaData | None] = None
    options: ClassVar[Mapping[str, str]] = MappingProxyType({})

    # Set by the runner (`bind_runtime`); a class default, so that a subclass's own
    # `__init__` need not call ours.
    _saga_runtime: ServiceRuntime | None = None

    def configure(self, options: Mapping[str, str]) -> None:  # noqa: B027 - optional hook
        """Receive the `--set` values of the keys in `options` (all of them, for every
        running service); raise `ValueError` naming the key for a bad value."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once the service runs (its consumer, relay and timers started), before
        any `answer` can be published; start background tasks here. Raising stops the
        run with the error."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Called when the run stops, after the consumer ended and before the outbox is
        drained: what `answer` queues until this returns is still published. Stop and
        await the background tasks `start` began."""

    def bind_runtime(self, runtime: ServiceRuntime | None) -> None:
        """Given by the runner that runs this service (None when it stops); not for
        the service's own code."""
        self._saga_runtime = runtime

    async def answer(self, event: Any, effects: Effects | None = None) -> Envelope:
        """Emit `event`, the late answer of a reaction marked `defer: true` that returned
        None, and return its envelope once it is committed to the outbox.

        The answer and `effects` (the service's own writes, given the connection) commit
        in one transaction with the outbox row, so once `answer` returns the answer is
        published even if the process dies. It carries the saga's correlation id, and
        names as its cause the event that moved the saga into the state it waits in.

        Raises `ForbiddenEmit` (nothing written) if the registry does not let this
        service answer with `event`'s type, or if the saga no longer waits for it: its
        deadline fired, another answer came first, or it is in another state. Raises
        `RuntimeError` when the service is not running under a runner."""
        return await self._runtime().answer(event, effects)

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction on the service's database for work outside a reaction (a
        poller reading the requests its reactions stored); committed when the block
        ends, rolled back if it raises. Raises `RuntimeError` when not running."""
        return self._runtime().transaction()

    def _runtime(self) -> ServiceRuntime:
        if self._saga_runtime is None:
            name = getattr(self, "service_name", type(self).__name__)
            raise RuntimeError(
                f"{name} is not running: answer() and transaction() work only while a "
                "runner runs the service (saga run, or Application)"
            )
        return self._saga_runtime
