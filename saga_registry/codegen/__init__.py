"""Generate typed events, service bases and diagrams from a loaded registry.

Nothing here imports the runtime (`saga_registry.engine`): codegen reads a registry and
writes files.
"""

from saga_registry.codegen.output import Report, check, write

__all__ = ["Report", "check", "write"]
