"""Load and validate a saga registry; generate typed events, service bases and diagrams.

Nothing here imports the runtime (`engine`): codegen only reads YAML and writes files.
"""

from codegen.errors import (
    CodegenError,
    Location,
    Problem,
    RegistryInvalid,
    RegistryNotFound,
    RenderError,
)
from codegen.loader import load_registry
from codegen.model import Event, Registry, Service, StateMachine
from codegen.output import Report, check, write

__all__ = [
    "CodegenError",
    "Event",
    "Location",
    "Problem",
    "Registry",
    "RegistryInvalid",
    "RegistryNotFound",
    "RenderError",
    "Report",
    "Service",
    "StateMachine",
    "check",
    "load_registry",
    "write",
]
