"""The outcome test scaffold: `tests/test_outcomes.py`, one test per outcome path of the
registry, written once for the project to fill in (an owned file, never overwritten).

The tests use `saga_registry.testing` (the pytest plugin giving the `saga` fixture, a
`SagaHarness`); this module only writes their source."""

from __future__ import annotations

from dataclasses import dataclass

from saga_registry.codegen.python_code import import_blocks, render
from saga_registry.registry.model import Registry
from saga_registry.registry.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class _Test:
    name: str
    path: str
    example: str


def _example(registry: Registry, event: str) -> str:
    """A start of the stimulus's constructor call: the saga key with a sample value."""
    fields = next((e.fields for e in registry.events if e.name == event), ())
    key = next((f for f in fields if f.name == registry.key), None)
    if key is None:
        return f"{event}(...)"
    sample = "1" if key.type == "integer" else '"o1"'
    return f"{event}({registry.key}={sample}, ...)"


def outcome_tests(registry: Registry, outcomes: list[Outcome], package: str) -> str:
    """The source of `tests/test_outcomes.py` for `outcomes`."""
    tests = []
    starts: set[str] = set()
    for o in outcomes:
        events = [s.event for s in o.steps]
        if events:
            starts.add(events[0])
        tests.append(
            _Test(
                name=o.name,
                path=" -> ".join(events) or f"starts in {o.terminal or 'a terminal state'}",
                example=_example(registry, events[0]) if events else "None",
            )
        )
    return render(
        "test_outcomes.py.jinja",
        saga_name=registry.name,
        tests=tests,
        import_blocks=import_blocks(
            {
                "saga_registry.testing": ["SagaHarness"],
                f"{package}.events": sorted(starts),
            },
            # Unused until a stimulus is filled in; imported so that it type-checks then.
            events_comment="  # noqa: F401",
        ),
    )
