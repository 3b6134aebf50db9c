"""`python -m saga_registry` is the `saga` command."""

from saga_registry.cli.main import main

main()
