"""The meaning checks of what lets a registry change under running sagas: event versions
and their upcasts, the events each compensation undoes, deadline names."""

from __future__ import annotations

import re
from typing import Any

from saga_registry.registry.errors import Problem
from saga_registry.registry.model import Event, FieldSpec, Registry, Upcast, object_schema
from saga_registry.registry.names import did_you_mean, snake_problem
from saga_registry.registry.patterns import PayloadValidator
from saga_registry.registry.source import Document, JsonPath
from saga_registry.registry.versions import fields_at, old_value_of


class _Checker:
    def __init__(self, reg: Registry, doc: Document) -> None:
        self.reg = reg
        self.doc = doc
        self.problems: list[Problem] = []

    def add(self, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.doc.source.at(path), message))

    def add_value(self, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.doc.source.value_at(path), message))

    def run(self) -> list[Problem]:
        for event in self.reg.events:
            self.versions(event)
            self.undoes(event)
        self.deadline_names()
        return self.problems

    # -- versions -----------------------------------------------------------------------

    def versions(self, event: Event) -> None:
        path: JsonPath = ("events", event.name)
        before = len(self.problems)
        raw = self.doc.data["events"][event.name].get("upcast", [])
        # The document's order, so that each problem points at its own item.
        at = {int(u["from"]): (*path, "upcast", i) for i, u in enumerate(raw)}
        froms = [int(u["from"]) for u in raw]
        for i, n in enumerate(froms):
            if n >= event.version:
                self.add_value(
                    (*path, "upcast", i, "from"),
                    f"{event.name} is at version {event.version}: there is no version {n + 1} "
                    f"for an upcast from {n} to read into",
                )
            elif froms.index(n) != i:
                self.add_value(
                    (*path, "upcast", i, "from"),
                    f"a second upcast from version {n}: merge it into the first (one upcast "
                    "per older version holds all its rename, values and default)",
                )
        missing = [n for n in range(1, event.version) if n not in froms]
        if missing:
            where = (*path, "version") if "version" in self.doc.data["events"][event.name] else path
            self.add_value(
                where,
                f"{event.name} is at version {event.version} but has no upcast from version"
                f"{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}: add "
                f"`upcast: [{{from: {missing[0]}}}]` with what changed (an empty one for none)",
            )
        if len(self.problems) > before or event.version != len(event.upcasts) + 1:
            return  # the older versions cannot be derived until the chain is whole
        for step in event.upcasts:
            self.upcast(event, step, at[step.from_version])

    def upcast(self, event: Event, step: Upcast, path: JsonPath) -> None:
        """`step` must read version n as version n+1: every name it uses a field of n+1."""
        newer = {f.name: f for f in fields_at(event, step.from_version + 1)}
        target = f"version {step.from_version + 1} of {event.name}"

        def known(name: str, where: JsonPath) -> FieldSpec | None:
            if name not in newer:
                self.add(where, f"'{name}' is not a field of {target}{did_you_mean(name, newer)}")
            return newer.get(name)

        renamed_to: dict[str, str] = {}
        for old, new in step.rename:
            where = (*path, "rename", old)
            if known(new, where) is None:
                continue
            if new in renamed_to:
                # Read in turn, the second would overwrite the first's value.
                self.add(
                    where,
                    f"'{renamed_to[new]}' and '{old}' are both renamed to '{new}': "
                    "a field takes the value of one",
                )
            renamed_to.setdefault(new, old)
            if old in newer:
                self.add(where, f"'{old}' is still a field of {target}: rename it to another name")
            if self.reg.key in (old, new):
                self.add(where, f"the saga key '{self.reg.key}' keeps its name in every version")
        for name, pairs in step.values:
            spec = known(name, (*path, "values", name))
            if spec is None:
                continue
            for old_value, new_value in pairs:
                if spec.type == "integer" and not isinstance(old_value_of(spec, old_value), int):
                    self.add(
                        (*path, "values", name, old_value),
                        f"{old_value!r} is not an integer: {name} is an integer field, so an "
                        "older value of it is one too",
                    )
                # Typed: `True in (1, 2)` holds, but True is no value of an integer enum.
                if spec.enum and not any(
                    type(v) is type(new_value) and v == new_value for v in spec.enum
                ):
                    self.add_value(
                        (*path, "values", name, old_value),
                        f"{new_value!r} is not a value of {name} in {target} "
                        f"(its values: {', '.join(map(str, spec.enum))})",
                    )
                elif not spec.enum:
                    # Every older event holding the value would fail to read as n+1.
                    for message in _misfits(spec, new_value):
                        self.add_value(
                            (*path, "values", name, old_value), f"value map of '{name}': {message}"
                        )
        for name, value in step.defaults:
            spec = known(name, (*path, "default", name))
            if spec is None:
                continue
            if name == self.reg.key:
                self.add((*path, "default", name), "the saga key is in every version: no default")
                continue
            for message in _misfits(spec, value):
                self.add_value((*path, "default", name), f"default for '{name}': {message}")

    # -- compensations ------------------------------------------------------------------

    def undoes(self, event: Event) -> None:
        path: JsonPath = ("events", event.name, "undoes")
        if event.undoes and event.kind != "compensation":
            self.add(path, f"only a compensation undoes events; {event.name} is a {event.kind}")
            return
        known = {e.name: e for e in self.reg.events}
        for i, name in enumerate(event.undoes):
            undone = known.get(name)
            if undone is None:
                self.add_value((*path, i), f"'{name}' is not an event{did_you_mean(name, known)}")
            elif undone.kind != "domain":
                self.add_value(
                    (*path, i),
                    f"'{name}' is a {undone.kind} event: a compensation undoes a domain one",
                )

    # -- deadlines ----------------------------------------------------------------------

    def deadline_names(self) -> None:
        first: dict[str, int] = {}
        for i, d in enumerate(self.reg.state_machine.deadlines):
            path: JsonPath = ("state_machine", "deadlines", i)
            # A name may also be a key the engine made (`<state>.<Event>`): naming a
            # deadline so keeps the timers armed under it when its state is renamed.
            if d.name and not _IMPLICIT_KEY.fullmatch(d.name):
                problem = snake_problem(d.name, "deadline")
                if problem:
                    self.add_value((*path, "name"), f"{problem} (or a key as `<state>.<Event>`)")
            if d.key in first:
                self.add(
                    path,
                    f"deadline '{d.key}' is already deadline {first[d.key] + 1}: give each a "
                    "distinct `name`",
                )
            first.setdefault(d.key, i)


_IMPLICIT_KEY = re.compile(r"[a-z][a-z0-9_]*\.[A-Z][A-Za-z0-9]*")


def _misfits(spec: FieldSpec, value: Any) -> list[str]:
    """How `value` does not fit field `spec` (empty when it does)."""
    schema = object_schema((spec,))
    schema["required"] = []
    return [err.message for err in PayloadValidator(schema).iter_errors({spec.name: value})]


def check_evolution(registry: Registry, doc: Document) -> list[Problem]:
    """Every problem of `registry`'s versions, upcasts, `undoes` and deadline names."""
    return _Checker(registry, doc).run()
