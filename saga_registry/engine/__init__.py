"""The generic saga runtime: runs any registry's services as a choreography.

What a project's code uses: `ServiceBase` (what generated service bases subclass) and
`ReactionContext` (what a reaction receives beside its event)."""

from saga_registry.engine.reaction import ReactionContext
from saga_registry.engine.service import ServiceBase

__all__ = ["ReactionContext", "ServiceBase"]
