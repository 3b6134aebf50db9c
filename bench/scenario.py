"""What a benchmark run drives: a fresh copy of the registry (its own topics and group
names, so runs never meet), the checkout's happy path read from the registry, and
happy-path orders that every service accepts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from handlers.catalog import CURRENCY, PRICES
from handlers.events import OrderCreated
from handlers.oms import new_order
from saga_registry.registry import load_registry
from saga_registry.registry.model import Registry
from saga_registry.registry.outcomes import outcome_paths
from saga_registry.registry.source import load_document

CUSTOMERS = 50
"""Rich customers c0..c49 (`Shop.seed`), so no order fails for want of money."""

FINAL_SERVICE = "OrderHistory"
"""The service whose archived snapshot marks a saga as ended."""


@dataclass(frozen=True, slots=True)
class HappyPath:
    """The events of a saga that succeeds, in order, and the services that emit them."""

    events: tuple[str, ...]
    relays: tuple[str, ...]
    """`relays[i]` consumes `events[i]` and emits `events[i + 1]`."""

    @property
    def relay_steps(self) -> list[tuple[str, str, str]]:
        """Per relay: (service, the event it consumes, the event it emits)."""
        return [(r, self.events[i], self.events[i + 1]) for i, r in enumerate(self.relays)]

    @property
    def hops(self) -> int:
        """Consumer hops on the critical path: each relay, then the final service."""
        return len(self.relays) + 1


def happy_path(registry: Registry) -> HappyPath:
    """The registry's outcome path to a successful terminal state (ValueError if none)."""
    outcomes, _ = outcome_paths(registry)
    sm = registry.state_machine
    for outcome in outcomes:
        if sm.state(outcome.terminal).outcome == "success":
            events = tuple(step.event for step in outcome.steps)
            relays = tuple(registry.event(e).producer for e in events[1:])
            return HappyPath(events, relays)
    raise ValueError(f"registry {registry.path} has no outcome path ending in success")


def fresh_registry(source: str | Path, run_id: str, folder: Path) -> tuple[Path, Registry]:
    """A copy of the registry at `source` under `folder`, with the saga name and both
    topics suffixed by `run_id`; returns its path and the loaded registry."""
    # codegen's reader keeps keys such as `on` as text (YAML 1.1 would make it true).
    doc = load_document(source).data
    doc["saga"]["name"] = f"{doc['saga']['name']}_bench_{run_id}"
    for topic in ("events", "dead_letter"):
        doc["topics"][topic]["name"] = f"{doc['topics'][topic]['name']}.bench-{run_id}"
    path = folder / "saga.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path, load_registry(path)


class Orders:
    """Happy-path orders: one to three of two catalogue items, for a rich customer, at
    the catalogue's prices (the warehouse holds enough for millions)."""

    def __init__(self, seed: int = 7) -> None:
        self._rng = random.Random(seed)

    def make(self, order_id: str) -> OrderCreated:
        """The `OrderCreated` of order `order_id`."""
        rng = self._rng
        lines = {sku: rng.randint(1, 3) for sku in rng.sample(sorted(PRICES), 2)}
        return new_order(
            order_id,
            f"c{rng.randrange(CUSTOMERS)}",
            [(s, q, PRICES[s]) for s, q in sorted(lines.items())],
            CURRENCY,
        )
