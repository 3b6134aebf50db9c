"""Sagas listed with their status and counts (`saga sagas`, `saga ui`): the services'
views merged (`inspect.saga_views`), filtered, ordered, counted."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from saga_registry.engine.inspect import STATUSES, SagaView, status
from saga_registry.registry.model import Registry


@dataclass(frozen=True)
class Listed:
    """A saga with its status (`inspect.status`) and, once ended, its outcome."""

    view: SagaView
    status: str
    outcome: str | None


@dataclass(frozen=True)
class SagaList:
    """The sagas chosen, in their order, and their counts."""

    rows: list[Listed]
    by_status: Counter[str]
    by_state: Counter[str]
    by_outcome: Counter[str]

    def doc(self, limit: int) -> dict[str, Any]:
        """The list as JSON-ready data (`saga sagas --json`), at most `limit` sagas."""
        shown = self.rows[:limit]
        return {
            "total": len(self.rows),
            "shown": len(shown),
            "counts": {
                "status": {s: self.by_status.get(s, 0) for s in STATUSES},
                "state": dict(sorted(self.by_state.items())),
                "outcome": dict(sorted(self.by_outcome.items())),
            },
            "sagas": [
                {
                    "saga_id": r.view.saga_id,
                    "state": r.view.state,
                    "status": r.status,
                    "outcome": r.outcome,
                    "started_at": r.view.started_at,
                    "updated_at": r.view.updated_at,
                    "due_at": r.view.due_at,
                    "correlation_id": r.view.correlation_id,
                    "seen_by": r.view.seen_by,
                    "views": dict(r.view.views),
                    "parked_in": list(r.view.parked_in),
                }
                for r in shown
            ],
        }


def listing(
    registry: Registry,
    views: list[SagaView],
    *,
    state: str | None = None,
    outcome: str | None = None,
    stuck_for: float | None = None,
    search: str = "",
    stuck_first: bool = False,
    now: float | None = None,
) -> SagaList:
    """The sagas of `views` in `state` (a registry state, which wins over a status of the
    same name, or a status of `inspect.STATUSES`), with `outcome`, whose id contains
    `search`; most recently updated first (with `stuck_first`, stuck and parked ones
    before the rest, the longest idle first)."""
    sm = registry.state_machine
    names = {s.name for s in sm.states}
    terminal = frozenset(sm.terminal_states)
    outcomes = {s.name: s.outcome for s in sm.states}
    now = time.time() if now is None else now
    rows = []
    for v in views:
        st = status(v, terminal, stuck_for, now)
        out = outcomes.get(v.state) if st == "ended" else None
        if state is not None and state != (v.state if state in names else st):
            continue
        if outcome is not None and out != outcome:
            continue
        if search and search not in v.saga_id:
            continue
        rows.append(Listed(v, st, out))
    rows.sort(key=lambda r: (-r.view.updated_at, r.view.saga_id))
    if stuck_first:
        troubled = sorted(
            (r for r in rows if r.status in ("stuck", "parked")),
            key=lambda r: (r.view.updated_at, r.view.saga_id),
        )
        rows = troubled + [r for r in rows if r.status not in ("stuck", "parked")]
    return SagaList(
        rows,
        Counter(r.status for r in rows),
        Counter(r.view.state for r in rows),
        Counter(r.outcome for r in rows if r.outcome),
    )
