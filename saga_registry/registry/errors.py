"""Every error codegen raises. Callers catch by class, never by message text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A place in a registry file: 1-based line and column."""

    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with a registry, and where."""

    location: Location
    message: str

    def __str__(self) -> str:
        # One problem, one line: a name quoted from the YAML may hold line breaks or
        # other invisible characters, so those are escaped.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.message)
        return f"{self.location}: {message}"


class CodegenError(Exception):
    """Base class of every error raised by `codegen`."""


class RegistryInvalid(CodegenError):
    """The registry cannot be used; `problems` lists every reason, sorted by place."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RegistryNotFound(CodegenError):
    """The registry file does not exist or cannot be read."""


class RenderError(CodegenError):
    """Graphviz could not render a diagram."""


def problem_line(path: str, exc: CodegenError, given_by: str = "--registry PATH") -> str:
    """`exc`, raised loading the registry at `path`, as the one line a command ends with.
    A registry that is not there is most often a command run outside its project: the
    line says so, and how to name the registry (`given_by`)."""
    if isinstance(exc, RegistryNotFound):
        # A path given relative is the default or was typed from the wrong folder.
        outside = not Path(path).is_absolute() and not Path(path).exists()
        return f"{exc}" + (f" (run saga in your project's folder, or give {given_by})" * outside)
    return f"registry {path}: {str(exc).splitlines()[0]}"
