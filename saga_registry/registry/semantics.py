"""The meaning checks: a registry can be well-formed and still describe a saga that
cannot run. Every check reports the file, line and key it is about."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from saga_registry.registry.errors import Problem
from saga_registry.registry.model import FieldSpec, Registry, snake_case
from saga_registry.registry.names import did_you_mean
from saga_registry.registry.patterns import PayloadValidator
from saga_registry.registry.source import Document, JsonPath

_SM = "state_machine"


class _Checker:
    def __init__(self, reg: Registry, doc: Document) -> None:
        self.reg = reg
        self.doc = doc
        self.problems: list[Problem] = []
        self.events = {e.name: e for e in reg.events}
        self.services = {s.name: s for s in reg.services}
        self.states = {s.name: s for s in reg.state_machine.states}

    def add(self, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.doc.source.at(path), message))

    def add_value(self, path: JsonPath, message: str) -> None:
        self.problems.append(Problem(self.doc.source.value_at(path), message))

    def run(self) -> list[Problem]:
        self.unique_names()
        self.producers()
        self.reactions()
        self.saga_key()
        self.state_machine_refs()
        if not self.problems:
            # Graph checks only make sense once every reference resolves.
            self.reachability()
            self.choreography_drives_machine()
            self.failures_compensate()
            self.unconsumed_events()
            self.deadlines()
            self.deferred_reactions_are_guarded()
        return self.problems

    # -- names and references -----------------------------------------------------------

    def unique_names(self) -> None:
        self.case_folded_names()
        owners: dict[str, JsonPath] = {}
        for section in ("services", "events", "definitions"):
            for name in self.doc.data.get(section, {}):
                path = (section, name)
                if name in owners:
                    first = self.doc.source.at(owners[name])
                    self.add(path, f"name '{name}' is already used at line {first.line}")
                else:
                    owners[name] = path
        by_module: dict[str, str] = {}
        for s in self.reg.services:
            clash = by_module.setdefault(s.module, s.name)
            if clash != s.name and clash.casefold() != s.name.casefold():
                self.add(
                    ("services", s.name),
                    f"service '{s.name}' and '{clash}' would share module '{s.module}'",
                )
        by_method: dict[str, str] = {}
        for e in self.reg.events:
            clash = by_method.setdefault(snake_case(e.name), e.name)
            if clash != e.name and clash.casefold() != e.name.casefold():
                self.add(
                    ("events", e.name),
                    f"events '{e.name}' and '{clash}' would share method 'on_{snake_case(e.name)}'",
                )

    def case_folded_names(self) -> None:
        """Names that differ only in case are refused: a service's database is named by its
        lower-cased name, and such names land in one namespace of generated code, which
        readers and case-insensitive file systems do not tell apart."""
        _case_clashes(
            (s.name for s in self.reg.services),
            lambda name, first: self.add(
                ("services", name),
                f"service '{name}' and '{first}' differ only in case: they would share the "
                f"database '{name.lower()}' ({{service}} in a database URL becomes the "
                "lower-cased name)",
            ),
        )
        _case_clashes(
            (e.name for e in self.reg.events),
            lambda name, first: self.add(
                ("events", name), f"event '{name}' and '{first}' differ only in case"
            ),
        )
        _case_clashes(
            self.doc.data.get("definitions", {}),
            lambda name, first: self.add(
                ("definitions", name), f"definition '{name}' and '{first}' differ only in case"
            ),
        )
        _case_clashes(
            (s.name for s in self.reg.state_machine.states),
            lambda name, first: self.add(
                (_SM, "states", name), f"state '{name}' and '{first}' differ only in case"
            ),
        )
        for e in self.reg.events:
            self._field_clashes(e.fields, ("events", e.name, "payload"))

    def _field_clashes(self, fields: tuple[FieldSpec, ...], path: JsonPath) -> None:
        _case_clashes(
            (f.name for f in fields),
            lambda name, first: self.add(
                (*path, "properties", name), f"field '{name}' and '{first}' differ only in case"
            ),
        )
        for f in fields:
            if f.properties:
                self._field_clashes(f.properties, (*path, "properties", f.name))

    def known_event(self, name: str, path: JsonPath, at_key: bool = False) -> bool:
        if name in self.events:
            return True
        hint = did_you_mean(name, self.events)
        (self.add if at_key else self.add_value)(path, f"unknown event '{name}'{hint}")
        return False

    def known_state(self, name: str, path: JsonPath) -> bool:
        if name in self.states:
            return True
        self.add_value(path, f"unknown state '{name}'{did_you_mean(name, self.states)}")
        return False

    def producers(self) -> None:
        for e in self.reg.events:
            if e.producer not in self.services:
                hint = did_you_mean(e.producer, self.services)
                self.add_value(
                    ("events", e.name, "producer"),
                    f"event '{e.name}' is produced by unknown service '{e.producer}'{hint}",
                )

    def reactions(self) -> None:
        emitted: set[str] = set()
        for s in self.reg.services:
            base: JsonPath = ("services", s.name)
            for i, name in enumerate(s.initiates):
                path = (*base, "initiates", i)
                if self.known_event(name, path):
                    emitted.add(name)
                    if self.events[name].producer != s.name:
                        self.add_value(
                            path,
                            f"service '{s.name}' initiates '{name}', which is "
                            f"produced by '{self.events[name].producer}'",
                        )
            for r in s.reactions:
                rpath = (*base, "reacts", r.event)
                self.known_event(r.event, rpath, at_key=True)
                seen: set[str] = set()
                for i, name in enumerate(r.emits):
                    path = (*rpath, "emits", i)
                    if name in seen:
                        self.add_value(path, f"'{name}' is listed twice")
                    seen.add(name)
                    if not self.known_event(name, path):
                        continue
                    emitted.add(name)
                    producer = self.events[name].producer
                    if producer != s.name:
                        self.add_value(
                            path,
                            f"reaction of '{s.name}' to '{r.event}' emits "
                            f"'{name}', an event of service '{producer}'",
                        )
        for d in self.reg.state_machine.deadlines:
            emitted.add(d.emit)
        for s in self.reg.services:
            for r in s.reactions:
                if r.event in self.events and r.event not in emitted:
                    self.add(
                        ("services", s.name, "reacts", r.event),
                        f"'{s.name}' reacts to '{r.event}', which is consumed but never "
                        "produced (no service initiates or emits it)",
                    )
        for e in self.reg.events:
            if e.name not in emitted and not self.reg.consumers(e.name):
                self.add(("events", e.name), f"event '{e.name}' is never emitted nor consumed")

    def saga_key(self) -> None:
        key = self.reg.key
        first: tuple[str, str] | None = None  # (event, type) of the first good key field
        for e in self.reg.events:
            match = [f for f in e.fields if f.name == key]
            path: JsonPath = ("events", e.name, "payload")
            if not match:
                self.add(path, f"event '{e.name}' lacks the saga key field '{key}'")
            elif not match[0].required or match[0].type not in ("string", "integer"):
                self.add(
                    (*path, "properties", key),
                    f"the saga key '{key}' must be a required string or integer field",
                )
            elif first is None:
                first = (e.name, match[0].type)
            elif match[0].type != first[1]:
                # One saga's events share one key value: it must read the same everywhere.
                self.add(
                    (*path, "properties", key),
                    f"the saga key '{key}' is {match[0].type} in '{e.name}' but "
                    f"{first[1]} in '{first[0]}': it must have one type in every event",
                )

    def state_machine_refs(self) -> None:
        sm = self.reg.state_machine
        if sm.initial not in self.states:
            hint = did_you_mean(sm.initial, self.states)
            self.add_value((_SM, "initial"), f"initial state '{sm.initial}' is not a state{hint}")
        elif self.states[sm.initial].terminal:
            self.add_value((_SM, "initial"), "the initial state cannot be terminal")
        if not sm.terminal_states:
            self.add((_SM, "states"), "no terminal state: mark at least one 'terminal: true'")
        seen: dict[tuple[str, str], int] = {}
        for i, t in enumerate(sm.transitions):
            path: JsonPath = (_SM, "transitions", i)
            self.known_event(t.event, (*path, "on"))
            self.known_state(t.target, (*path, "to"))
            multi = len(t.sources) > 1 or isinstance(
                self.doc.data[_SM]["transitions"][i]["from"], list
            )
            for j, src in enumerate(t.sources):
                spath = (*path, "from", j) if multi else (*path, "from")
                if self.known_state(src, spath) and self.states[src].terminal:
                    self.add_value(spath, f"terminal state '{src}' cannot have transitions")
                if (src, t.event) in seen:
                    self.add_value(
                        spath,
                        f"'{t.event}' in state '{src}' already has a transition "
                        f"(transitions[{seen[(src, t.event)]}])",
                    )
                seen.setdefault((src, t.event), i)
        moving = {t.event for t in sm.transitions}
        for e in self.reg.events:
            if e.name not in moving:
                self.add(("events", e.name), f"event '{e.name}' triggers no state transition")

    # -- graphs -------------------------------------------------------------------------

    def _successors(self) -> dict[str, list[tuple[str, str]]]:
        succ: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for src, event, dst in self.reg.state_machine.edges():
            succ[src].append((event, dst))
        return succ

    def _state_path(self, name: str) -> JsonPath:
        return (_SM, "states", name)

    def reachability(self) -> None:
        sm = self.reg.state_machine
        succ = self._successors()
        reached = _closure([sm.initial], lambda s: (d for _, d in succ[s]))
        for s in sm.states:
            if s.name not in reached:
                self.add(
                    self._state_path(s.name),
                    f"state '{s.name}' is unreachable from the initial state '{sm.initial}'",
                )
        pred: dict[str, list[str]] = defaultdict(list)
        for src, _, dst in sm.edges():
            pred[dst].append(src)
        finishing = _closure(sm.terminal_states, lambda s: pred[s])
        for s in sm.states:
            if s.name in reached and s.name not in finishing:
                self.add(
                    self._state_path(s.name), f"state '{s.name}' has no way to a terminal state"
                )

    def choreography_drives_machine(self) -> None:
        """Each live state must be left by an event some service actually emits then."""
        sm = self.reg.state_machine
        entering: dict[str, set[str]] = defaultdict(set)
        leaving: dict[str, set[str]] = defaultdict(set)
        for src, event, dst in sm.edges():
            entering[dst].add(event)
            leaving[src].add(event)
        for s in sm.states:
            if s.terminal or not leaving[s.name]:
                continue
            drivers = {d.emit for d in sm.deadlines if d.state == s.name}
            if s.name == sm.initial:
                drivers |= {e for svc in self.reg.services for e in svc.initiates}
            for svc in self.reg.services:
                for r in svc.reactions:
                    if r.event in entering[s.name]:
                        drivers |= set(r.emits)
            if not drivers & leaving[s.name]:
                why = ", ".join(sorted(entering[s.name])) or "the start of a saga"
                self.add(
                    self._state_path(s.name),
                    f"nothing moves the saga out of state '{s.name}': no reaction to "
                    f"{why} emits {' or '.join(sorted(leaving[s.name]))}, and no deadline does",
                )

    def failures_compensate(self) -> None:
        sm = self.reg.state_machine
        succ = self._successors()
        terminal = set(sm.terminal_states)
        for i, t in enumerate(sm.transitions):
            if self.events[t.event].kind != "failure":
                continue
            # Search (state, compensated-yet) pairs for a terminal state reached after at
            # least one compensation event.
            start = (t.target, False)
            seen = {start}
            queue = deque([start])
            ok = False
            while queue and not ok:
                state, compensated = queue.popleft()
                if state in terminal:
                    ok = compensated
                    continue
                for event, dst in succ[state]:
                    nxt = (dst, compensated or self.events[event].kind == "compensation")
                    if nxt not in seen:
                        seen.add(nxt)
                        queue.append(nxt)
            if not ok:
                self.add(
                    (_SM, "transitions", i, "on"),
                    f"failure '{t.event}' leads to state '{t.target}' with no compensation "
                    "path to a terminal state",
                )

    def unconsumed_events(self) -> None:
        sm = self.reg.state_machine
        for e in self.reg.events:
            if self.reg.consumers(e.name):
                continue
            targets = {t.target for t in sm.transitions if t.event == e.name}
            if not all(self.states[t].terminal for t in targets):
                self.add(
                    ("events", e.name),
                    f"event '{e.name}' is produced but no service "
                    "reacts to it, and it does not end the saga",
                )

    def deadlines(self) -> None:
        sm = self.reg.state_machine
        leaving: dict[str, set[str]] = defaultdict(set)
        for src, event, _ in sm.edges():
            leaving[src].add(event)
        for i, d in enumerate(sm.deadlines):
            path: JsonPath = (_SM, "deadlines", i)
            if not self.known_state(d.state, (*path, "state")):
                continue
            if self.states[d.state].terminal:
                self.add_value((*path, "state"), f"terminal state '{d.state}' has no deadline")
            if not self.known_event(d.emit, (*path, "emit")):
                continue
            if d.emit not in leaving[d.state]:
                self.add_value(
                    (*path, "emit"),
                    f"'{d.emit}' has no transition out of state "
                    f"'{d.state}', so this deadline would be skipped",
                )
            if self.reg.key in dict(d.payload):
                # The engine sets it to the saga's own key; a value here would be ignored.
                self.add(
                    (*path, "payload", self.reg.key),
                    f"deadline payload for '{d.emit}' gives the saga key '{self.reg.key}': "
                    "leave it out, the engine fills it in",
                )
            payload = {k: v for k, v in dict(d.payload).items() if k != self.reg.key}
            # The key is the saga's own, filled in by the engine: the payload is checked
            # without it, so that the key's own constraints (a minimum, a pattern) need no
            # made-up value to meet.
            schema = dict(self.events[d.emit].payload_schema())
            schema["required"] = [n for n in schema.get("required", []) if n != self.reg.key]
            # The Rust-regex validator: a pattern's worst case cannot stall the check.
            for err in PayloadValidator(schema).iter_errors(payload):
                where = ".".join(str(p) for p in err.absolute_path) or "payload"
                self.add(
                    (*path, "payload"), f"deadline payload for '{d.emit}': {where}: {err.message}"
                )

    def deferred_reactions_are_guarded(self) -> None:
        sm = self.reg.state_machine
        guarded = {d.state for d in sm.deadlines}
        for s in self.reg.services:
            for r in s.reactions:
                if not r.defer:
                    continue
                for t in sm.transitions:
                    if t.event != r.event:
                        continue
                    if t.target not in guarded:
                        self.add(
                            ("services", s.name, "reacts", r.event, "defer"),
                            f"'{s.name}' may defer its reaction to '{r.event}', but state "
                            f"'{t.target}' has no deadline: the saga could wait forever",
                        )
                    # The late answer and the deadline exclude each other by taking one
                    # timer row in one database: the deferring service's.
                    for d in sm.deadlines:
                        if d.state == t.target and self.reg.event(d.emit).producer != s.name:
                            self.add(
                                ("services", s.name, "reacts", r.event, "defer"),
                                f"'{s.name}' may defer its reaction to '{r.event}', but the "
                                f"deadline on '{t.target}' emits '{d.emit}', which "
                                f"'{self.reg.event(d.emit).producer}' produces: a deferred "
                                f"answer and its deadline must be given by the same service, "
                                f"so that only one of them counts",
                            )


def _case_clashes(names: Iterable[str], report: Callable[[str, str], None]) -> None:
    """Call `report(name, first)` for each name equal, once case-folded, to an earlier one
    (exact repeats are reported elsewhere)."""
    first_of: dict[str, str] = {}
    for name in names:
        first = first_of.setdefault(name.casefold(), name)
        if first != name:
            report(name, first)


def _closure(start: Iterable[str], step: Callable[[str], Iterable[str]]) -> set[str]:
    """Every state reachable from `start` by following `step`."""
    seen = set(start)
    queue = deque(seen)
    while queue:
        for nxt in step(queue.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def check_semantics(registry: Registry, doc: Document) -> list[Problem]:
    """Every meaning problem of `registry` (empty when the saga can run)."""
    return _Checker(registry, doc).run()
