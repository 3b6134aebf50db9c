"""The one seam between generated code and the runtime: every generated service base
subclasses `ServiceBase`, and the runner takes a `ServiceBase`."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from sqlalchemy import MetaData


class ServiceBase(abc.ABC):
    """A service of a registry. The generated base of each service fills in the class
    variables from the registry; the project's subclass writes the reactions (one
    `async def on_<event>(self, event, ctx)` per consumed event) and may declare:

    - `metadata`: the SQLAlchemy `MetaData` of the service's own tables, created in the
      service's database beside the engine's tables;
    - `options`: the `--set KEY=VALUE` keys it takes, each with a one-line description
      (`saga run` refuses keys no running service declares), given to `configure`.
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

    def configure(self, options: Mapping[str, str]) -> None:  # noqa: B027 - optional hook
        """Receive the `--set` values of the keys in `options` (all of them, for every
        running service); raise `ValueError` naming the key for a bad value."""
