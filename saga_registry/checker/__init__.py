"""`saga check`: every run the engine can produce for one saga of a registry, explored
up to a bound, and rules proved over all of them (docs/check.md).

`model` is the abstract world (a saga's configurations and moves, read from the
engine's semantics), `explore` the bounded breadth-first search, `rules` the rules and
their verdicts, `counterexample` how a breaking run is printed and drawn. The package
imports the registry only; drawing imports `codegen.diagrams`, and nothing imports the
engine."""

from saga_registry.checker.explore import Exploration, explore
from saga_registry.checker.rules import RULES, Verdict, check_all

__all__ = ["RULES", "Exploration", "Verdict", "check_all", "explore"]
