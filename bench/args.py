"""The command-line pieces `python -m bench` and `python -m bench.soak` share."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from bench.errors import BenchError
from saga_registry.engine.errors import EngineError
from saga_registry.registry import CodegenError

_T = TypeVar("_T")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, naming `--help`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """A whole number of at least 1, for `type=`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def run_in_state(name: str, keep: bool, run: Callable[[Path], Coroutine[Any, Any, _T]]) -> _T:
    """`run(state)` in a fresh folder for its databases and logs: removed after success
    unless `keep`, kept and named after a failure. A failure ends the process with one
    line (status 1; 130 on Ctrl-C)."""
    state = Path(tempfile.mkdtemp(prefix=f"saga-{name}-"))
    ok = False
    try:
        result = asyncio.run(run(state))
        ok = True
        return result
    except (BenchError, EngineError, CodegenError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {first} (state kept in {state})", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted (state kept in {state})", file=sys.stderr)
        sys.exit(130)
    finally:
        if ok and not keep:
            shutil.rmtree(state, ignore_errors=True)
