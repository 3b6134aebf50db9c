"""Find and build the services' handler classes (the user-owned subclasses of the
generated bases), refusing clearly when one is missing, stale or incomplete."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from saga_registry.engine.errors import ConfigError
from saga_registry.registry.model import Registry, snake_case


def event_types(package: str) -> Mapping[str, Any]:
    """The generated `EVENT_TYPES` of `package.events`."""
    module = _import(f"{package}.events", "run `saga codegen` first")
    types: Mapping[str, Any] = module.EVENT_TYPES
    return types


def load_service(
    registry: Registry, name: str, package: str, options: Mapping[str, str] | None = None
) -> Any:
    """An instance of service `name`'s class from `package.<module>`, given `options`
    through its `configure(options)` method if it has one (a bad option is a ConfigError)."""
    names = [s.name for s in registry.services]
    if name not in names:
        raise ConfigError(f"unknown service {name!r}: the registry has {', '.join(names)}")
    spec = registry.service(name)
    module_name = f"{package}.{spec.module}"
    module = _import(module_name, "run `saga codegen` to create it")
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"missing handler: {module_name} defines no class {name}")
    expected = {r.event: r.emits for r in spec.reactions}
    if dict(getattr(cls, "reactions", {})) != expected:
        raise ConfigError(
            f"handler {name} was generated from another registry version: run `saga codegen`"
        )
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise ConfigError(
            f"handler {name} in {module_name} lacks reaction(s): {', '.join(missing)}"
        )
    try:
        service = cls()
        configure = getattr(service, "configure", None)
        if configure is not None:
            configure(dict(options or {}))
    except ConfigError:
        raise
    except Exception as exc:  # user code: report it on one line
        raise ConfigError(
            f"handler {name} could not be created: {type(exc).__name__}: {exc}"
        ) from None
    return service


def _import(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise ConfigError(f"missing handler module {module}: {hint}") from None
        raise ConfigError(f"cannot import {module}: {exc}") from None
    except Exception as exc:  # user code: report it on one line
        raise ConfigError(f"cannot import {module}: {type(exc).__name__}: {exc}") from None


__all__ = ["event_types", "load_service", "snake_case"]
