"""A service's consumer loop: subscribe, fetch, handle, mark, commit; outlive outages,
stop on a database that is damaged or not the group's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from saga_registry.engine.bus import Delivery
from saga_registry.engine.custody import record_positions
from saga_registry.engine.database import damage
from saga_registry.engine.deadletter import one_line
from saga_registry.engine.errors import DatabaseDamaged, DatabaseMismatch

if TYPE_CHECKING:
    from saga_registry.engine.runner import ServiceRunner

log = logging.getLogger("saga.runner")

PASSED_COMMIT_S = 1.0
"""At most this long between fetching a batch the service passed entirely and committing it."""


async def consume(runner: ServiceRunner, stop: asyncio.Event) -> None:
    """Consume for `runner` until `stop` is set; a batch in hand is finished first.

    A bus or database outage (a broker restart, a failed commit) does not end the loop: it
    is logged, and after a pause the runner subscribes again, so that whatever was handed
    out but not committed is delivered again (and deduplicated). A damaged database, or one
    that is not the group's, ends it (`DatabaseDamaged`, `DatabaseMismatch`)."""
    if not runner.machine.projection.events:
        # Nothing of the topic is for this service (it only begins sagas, or answers,
        # or serves its own reads): fetching every record to pass it would cost CPU
        # for nothing. It joins no group; it starts reading if a registry gives it events.
        log.info("%s: takes in no event of the registry, not consuming", runner.name)
        await stop.wait()
        return
    settings = runner.settings
    pause = settings.backoff_s
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        subscription = None
        # The previous batch's offset commit, left running while the next batch is
        # fetched and handled: its marks are in the database already, and a commit that
        # fails is found before the next one (everything since is delivered again, and
        # deduplicated).
        committing: asyncio.Task[None] | None = None
        try:
            subscription = await runner.bus.subscribe(runner.group, [runner.topic], runner.owner)
            runner.subscription = subscription
            # Deliveries passed unread, not committed yet: a batch of nothing but events
            # outside the service's projection waits to be committed with a later one (or
            # PASSED_COMMIT_S later), so that a service which needs few of the topic's
            # events does not write its mark and commit for every batch. Lost on a
            # restart, they are only fetched and passed again.
            passed: list[Delivery] = []
            since = 0.0
            # Handled (their marks written), offsets not yet committed: committed at most
            # every `commit_every_s`, so that a slow trickle of records does not cost the
            # broker a commit request each; a restart only delivers them again.
            handled: list[Delivery] = []
            committed_at = loop.time()
            while not stop.is_set():
                batch = await subscription.fetch(settings.batch, settings.poll_timeout_s)
                if batch:
                    if await runner.handle_batch(batch, passed):
                        handled += passed + batch
                        passed = []
                    else:
                        if not passed:
                            since = loop.time()
                        passed.extend(batch)
                if passed and loop.time() - since >= PASSED_COMMIT_S:
                    # The database's mark first: it must never be behind the bus.
                    await record_positions(runner.db, passed)
                    handled += passed
                    passed = []
                if handled and loop.time() - committed_at >= settings.commit_every_s:
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(subscription.commit(handled))
                    handled, committed_at = [], loop.time()
                pause = settings.backoff_s
            if committing is not None:
                await committing
            if handled:
                await subscription.commit(handled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must outlive any outage
            stop_if_damaged(runner, exc)
            runner.metrics.inc("consumer_errors", runner.name)
            log.warning(
                "%s: consumer error, resubscribing in %.2gs: %s", runner.name, pause, one_line(exc)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            pause = min(pause * 2, settings.backoff_max_s * 5)
        finally:
            if committing is not None:
                # Only after a failure is it still running or unseen: the records it
                # would commit are delivered again either way.
                if not committing.done():
                    committing.cancel()
                elif not committing.cancelled():
                    committing.exception()
            if subscription is not None:
                runner.subscription = None
                with contextlib.suppress(Exception):
                    await subscription.close()


def stop_if_damaged(runner: ServiceRunner, exc: Exception) -> None:
    """Raise `DatabaseDamaged` if `exc` says `runner`'s database is damaged (and re-raise a
    `DatabaseMismatch`): retrying cannot help, and dead-lettering would blame the event."""
    if isinstance(exc, DatabaseDamaged | DatabaseMismatch):
        raise exc
    why = damage(exc)
    if why is not None:
        where = runner.db.where
        raise DatabaseDamaged(
            f"{runner.name}: database {where} is damaged, stopping: {why}"
        ) from exc
