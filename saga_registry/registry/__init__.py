"""The saga registry: load a YAML registry, check its structure and meaning, and hold it
as plain frozen data. Both the code generator and the runtime read it; it imports
neither (and no renderer: no Jinja2, no Graphviz)."""

from saga_registry.registry.errors import (
    CodegenError,
    Location,
    Problem,
    RegistryInvalid,
    RegistryNotFound,
    RenderError,
)
from saga_registry.registry.loader import load_registry
from saga_registry.registry.model import Event, Registry, Service, StateMachine

__all__ = [
    "CodegenError",
    "Event",
    "Location",
    "Problem",
    "Registry",
    "RegistryInvalid",
    "RegistryNotFound",
    "RenderError",
    "Service",
    "StateMachine",
    "load_registry",
]
