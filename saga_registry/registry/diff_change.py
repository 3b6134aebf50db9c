"""One difference between two registries, and who it affects: the value `saga diff` lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Audience = Literal["consumers", "producers", "sagas in flight", "services"]
AUDIENCES: tuple[Audience, ...] = ("consumers", "producers", "sagas in flight", "services")
"""Every audience, in the order `saga diff` groups changes."""

CONSUMERS_FIRST = "consumers first"
"""The rollout of a change old consumers would refuse but new ones read: deploy every
service that takes the event in before the one that produces it."""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between an old and a new registry.

    `code` is stable (docs/diff.md lists every one); `where` names the event, field
    (`Event.field`, `Event.items[].sku`), state, transition, deadline, service or topic;
    `breaking` says whether deploying the new registry can break what `for_whom` runs or
    stores; `why` is one sentence saying what happens and, when it can be, how to make the
    change compatible; `rollout` is `"consumers first"` when the change is compatible only
    if the services that take the event in are deployed before its producer.
    """

    code: str
    where: str
    breaking: bool
    for_whom: Audience
    why: str
    rollout: str = ""

    def to_json(self) -> dict[str, Any]:
        """This change as JSON-compatible data (every attribute, by name)."""
        return {
            "code": self.code,
            "where": self.where,
            "breaking": self.breaking,
            "for_whom": self.for_whom,
            "why": self.why,
            "rollout": self.rollout,
        }


def ordered(changes: list[Change]) -> list[Change]:
    """`changes` breaking first, then grouped by audience (`AUDIENCES` order), keeping the
    registry order within each group."""
    return sorted(changes, key=lambda c: (not c.breaking, AUDIENCES.index(c.for_whom)))


def summary(changes: list[Change]) -> str:
    """One line counting `changes`: `no changes`, or e.g. `3 changes: 1 breaking
    (consumers), 2 compatible`."""
    if not changes:
        return "no changes"
    broken = [c for c in changes if c.breaking]
    total = f"{len(changes)} change{'s' if len(changes) != 1 else ''}"
    if not broken:
        return f"{total}: all compatible"
    whom = ", ".join(a for a in AUDIENCES if any(c.for_whom == a for c in broken))
    return f"{total}: {len(broken)} breaking ({whom}), {len(changes) - len(broken)} compatible"
