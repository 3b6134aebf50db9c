"""saga-registry: a declarative saga engine driven by a YAML event registry.

- `saga_registry.registry`: load and check a registry (plain data);
- `saga_registry.codegen`: generate events, service bases and diagrams from it;
- `saga_registry.engine`: the runtime that runs any registry's services;
- `saga_registry.testing`: a harness to test a project's reactions (a pytest plugin).

This module imports none of them, so that codegen never loads the runtime nor the
runtime the generator.
"""
