"""The bounded search: every configuration a saga can reach within `max_events` events
appended to its log, breadth first, so that the first path found to any configuration
is a shortest one (a counterexample is as short as it can be)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from saga_registry.checker.model import Config, Move, World
from saga_registry.registry.model import Registry

DEFAULT_MAX_EVENTS = 40
"""Enough for every run of the registries shipped (the checkout's longest has 7
events) many times over; a registry with loops is explored up to it."""

MAX_CONFIGS = 200_000
"""Configurations kept before the search stops expanding new ones (a safety valve for
registries whose reactions interleave beyond any use; well over a second of search).
Hitting it counts as hitting the bound: nothing beyond is claimed proved."""


@dataclass
class Exploration:
    """What the search found: every configuration reached, how (`parent`), at which depth,
    and each expanded configuration's moves."""

    world: World
    max_events: int
    start: Config
    parent: dict[Config, tuple[Config, Move] | None] = field(default_factory=dict)
    depth: dict[Config, int] = field(default_factory=dict)
    moves: dict[Config, list[tuple[Move, Config]]] = field(default_factory=dict)
    frontier: set[Config] = field(default_factory=set)
    """Configurations at the bound that still had moves: their futures are unexplored."""
    max_configs: int = MAX_CONFIGS
    too_many: bool = False
    """Whether the search stopped at `max_configs` rather than at `max_events`."""
    seconds: float = 0.0

    @property
    def bound_hit(self) -> bool:
        """Whether some run was cut at `max_events` (then no rule is proved outright)."""
        return bool(self.frontier)

    @property
    def limit(self) -> str:
        """What the explored runs are, when the bound was hit."""
        if self.too_many:
            return f"the first {self.max_configs} configurations"
        return f"runs up to {self.max_events} events"

    @property
    def transitions(self) -> int:
        """How many moves were explored."""
        return sum(len(m) for m in self.moves.values())

    def runs(self) -> int | None:
        """How many distinct runs were explored (paths from the start to a configuration
        with no move left, or cut at the bound); None when the runs loop, and so are
        endless in number."""
        counts: dict[Config, int] = {}
        on_path: set[Config] = set()
        stack: list[tuple[Config, bool]] = [(self.start, False)]
        while stack:
            config, done = stack.pop()
            if done:
                on_path.discard(config)
                nexts = [c for _, c in self.moves.get(config, ())]
                counts[config] = sum(counts[c] for c in nexts) if nexts else 1
                continue
            if config in counts:
                continue
            if config in on_path:
                return None
            on_path.add(config)
            stack.append((config, True))
            for _, nxt in self.moves.get(config, ()):
                if nxt in on_path:
                    return None
                if nxt not in counts:
                    stack.append((nxt, False))
        return counts[self.start]

    def ordered(self) -> list[Config]:
        """Every configuration reached, shortest paths first (deterministic)."""
        return sorted(self.depth, key=lambda c: (self.depth[c], c))

    def path(self, config: Config) -> list[Move]:
        """The moves of a shortest run from the start to `config`."""
        out: list[Move] = []
        step = self.parent[config]
        while step is not None:
            before, move = step
            out.append(move)
            step = self.parent[before]
        return out[::-1]


def explore(
    registry: Registry, max_events: int = DEFAULT_MAX_EVENTS, max_configs: int = MAX_CONFIGS
) -> Exploration:
    """Explore every run of one saga of `registry` up to `max_events` events (and at most
    about `max_configs` configurations)."""
    started = time.perf_counter()
    world = World(registry)
    start = world.initial()
    found = Exploration(world, max_events, start, max_configs=max_configs)
    found.parent[start] = None
    found.depth[start] = 0
    todo = deque([start])
    while todo:
        config = todo.popleft()
        depth = found.depth[config]
        nexts = world.moves(config)
        full = len(found.depth) >= max_configs
        if depth >= max_events or full:
            if nexts:
                found.frontier.add(config)
                found.too_many |= full and depth < max_events
            continue
        found.moves[config] = nexts
        for move, nxt in nexts:
            if nxt not in found.depth:
                found.depth[nxt] = depth + 1
                found.parent[nxt] = (config, move)
                todo.append(nxt)
    found.seconds = time.perf_counter() - started
    return found
