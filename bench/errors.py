"""The benchmark's own errors: the CLI prints them as one line."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark run could not be completed (a service died, a timeout, no broker)."""
