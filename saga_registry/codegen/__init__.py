"""Generate typed events, service bases and diagrams from a loaded registry.

Nothing here imports the runtime (`saga_registry.engine`): codegen reads a registry and
writes files.
"""

from saga_registry.codegen.output import PACKAGE, Report, check, svg_check_skipped, write
from saga_registry.codegen.owned import unwritten_reactions

__all__ = ["PACKAGE", "Report", "check", "svg_check_skipped", "unwritten_reactions", "write"]
