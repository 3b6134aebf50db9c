"""Where a project's saga is unless its pytest settings say otherwise (no imports: the
plugin reads these at every pytest start)."""

DEFAULT_REGISTRY = "registry/saga.yaml"
DEFAULT_PACKAGE = "handlers"
