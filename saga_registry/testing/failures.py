"""Injected reaction failures: make a service's reaction to one event type raise, so that
retries, dead-lettering and parking can be tested against the real runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any, Any], Awaitable[Any]]


class InjectedFailure(RuntimeError):
    """The error an injected failure raises unless the test gives its own."""


@dataclass
class Failure:
    """One injected failure of `service`'s reaction to `event_type`: the next `times`
    calls raise `error` (`times=None`: every call). `calls` and `raised` count what
    happened since it was injected."""

    service: str
    event_type: str
    times: int | None
    error: BaseException
    calls: int = 0
    raised: int = 0

    @property
    def exhausted(self) -> bool:
        """Whether it will raise no more."""
        return self.times is not None and self.raised >= self.times

    def wrap(self, handler: Handler) -> Handler:
        """`handler`, raising this failure's error while it is not exhausted."""

        async def failing(event: Any, ctx: Any) -> Any:
            self.calls += 1
            if not self.exhausted:
                self.raised += 1
                raise self.error
            return await handler(event, ctx)

        return failing


def error_of(service: str, event_type: str, error: BaseException | str | None) -> BaseException:
    """The exception an injected failure raises: `error` itself, an `InjectedFailure`
    carrying the text `error`, or one naming the reaction."""
    if isinstance(error, BaseException):
        return error
    return InjectedFailure(error or f"injected failure of {service}'s reaction to {event_type}")
