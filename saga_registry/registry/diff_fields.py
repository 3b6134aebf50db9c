"""How one event's payload changed between two registries, field by field: the old
version read through the new registry's upcasts (renames, value maps, defaults, as the
engine reads it) compared with the new version. diff_payload.py says which events changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from saga_registry.registry.diff_change import CONSUMERS_FIRST, Change
from saga_registry.registry.model import Event, FieldSpec, Upcast
from saga_registry.registry.versions import mapped


def upcast_step(e: Event, from_version: int) -> Upcast | None:
    """`e`'s upcast reading version `from_version` as the next (None if it has none)."""
    return next((u for u in e.upcasts if u.from_version == from_version), None)


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _shape(spec: FieldSpec) -> FieldSpec:
    """`spec` without its name and descriptions: what a rename keeps."""
    return replace(
        spec,
        name="",
        description="",
        items=None if spec.items is None else _shape(spec.items),
        properties=tuple(replace(_shape(p), name=p.name) for p in spec.properties),
    )


@dataclass(frozen=True, slots=True)
class _Carried:
    """What the new registry's upcasts make of the old version's payload."""

    names: dict[str, str]
    """Old top-level field name -> its name after the upcasts."""
    defaults: dict[str, Any]
    """Field (by its new name) -> the value the upcasts give an old event lacking it."""
    value: Callable[[str, Any], Any]
    """(old field name, old value) -> the value after the upcasts."""


class PayloadDiff:
    """Compares the payloads of one event's old and new versions: `fields()` of the
    payload lists every change."""

    def __init__(self, o: Event, n: Event, readers: str) -> None:
        self.o, self.n, self.readers = o, n, readers
        self.steps = [
            u
            for v in range(o.version, n.version)
            if (u := upcast_step(n, v)) is not None  # a missing step is the validator's to name
        ]
        self.carried = self._carry()

    def _carry(self) -> _Carried:
        names = {f.name: f.name for f in self.o.fields}
        defaults: dict[str, Any] = {}
        for step in self.steps:
            rename = dict(step.rename)
            names = {old: rename.get(cur, cur) for old, cur in names.items()}
            defaults = {rename.get(k, k): v for k, v in defaults.items()}
            defaults.update(step.defaults)

        def value(field: str, v: Any) -> Any:
            for step in self.steps:
                field = dict(step.rename).get(field, field)
                v = mapped(step, field, v)
            return v

        return _Carried(names, defaults, value)

    def fix(self, entry: str) -> str:
        """How to make an old event read as the new one with an upcast `entry`."""
        name, v = self.n.name, self.o.version
        if self.n.version > v:
            return f"add `{entry}` to {name}'s upcast from {v}"
        if not self.o.upcasts:
            return f"raise {name}'s version to {v + 1} and add `upcast: [{{from: {v}, {entry}}}]`"
        return f"raise {name}'s version to {v + 1} and add `{{from: {v}, {entry}}}` to its upcast"

    def change(self, code: str, where: str, breaking: bool, why: str) -> Change:
        """A change of this event's payload, for its consumers."""
        rollout = "" if breaking else CONSUMERS_FIRST
        return Change(code, where, breaking, "consumers", why, rollout)

    def fields(
        self, where: str, olds: tuple[FieldSpec, ...], news: tuple[FieldSpec, ...], top: bool
    ) -> list[Change]:
        """The changes between the fields `olds` and `news` of the object at `where`;
        `top`: the payload itself, whose old fields the upcasts carry."""
        carried = self.carried if top else _Carried({}, {}, lambda f, v: v)
        old_by = {carried.names.get(f.name, f.name): f for f in olds}
        new_by = {f.name: f for f in news}
        changes: list[Change] = []
        for name, f in old_by.items():
            if name != f.name and name in new_by:
                changes.append(
                    self.change(
                        "field_renamed",
                        f"{where}.{f.name}",
                        False,
                        f"renamed to `{name}`; old events read as the new one through "
                        f"{self.n.name}'s upcast (rename), but old consumers refuse it",
                    )
                )
        removed = [n for n in old_by if n not in new_by]
        added = [n for n in new_by if n not in old_by and n not in carried.defaults]
        for name in new_by:
            if name not in old_by and name in carried.defaults:
                changes.append(
                    self.change(
                        "field_required_added" if new_by[name].required else "field_optional_added",
                        f"{where}.{name}",
                        False,
                        f"old events get `{name}: {_value(carried.defaults[name])}` through "
                        f"{self.n.name}'s upcast (default); old consumers refuse the field",
                    )
                )
        for gone, came in _renames(removed, added, old_by, new_by):
            removed.remove(gone)
            added.remove(came)
            fix = self.fix(f"rename: {{{old_by[gone].name}: {came}}}") if top else "keep its name"
            changes.append(
                self.change(
                    "field_renamed",
                    f"{where}.{old_by[gone].name}",
                    True,
                    f"renamed to `{came}`: events in the log still carry "
                    f"`{old_by[gone].name}` and lack `{came}`; {fix}",
                )
            )
        for name in removed:
            changes.append(
                self.change(
                    "field_removed",
                    f"{where}.{old_by[name].name}",
                    True,
                    f"events in the log still carry `{old_by[name].name}`, which the new "
                    f"event class refuses as unknown ({self.readers} read it); keep it as "
                    "an optional field and stop setting it",
                )
            )
        for name in added:
            field = new_by[name]
            if field.required:
                fix = self.fix(f"default: {{{name}: ...}}") if top else "make it optional"
                changes.append(
                    self.change(
                        "field_required_added",
                        f"{where}.{name}",
                        True,
                        f"events in the log lack the required `{name}`; {fix}"
                        + (", or make it optional" if top else ""),
                    )
                )
            else:
                changes.append(
                    self.change(
                        "field_optional_added",
                        f"{where}.{name}",
                        False,
                        f"old events lack it, which is allowed; old consumers refuse it "
                        f"as unknown, so deploy {self.readers} before {self.n.producer} "
                        "sets it",
                    )
                )
        for name, f in old_by.items():
            if name in new_by:
                path = f"{where}.{name}"
                default = top and name in carried.defaults
                carry = (lambda v, old=f.name: carried.value(old, v)) if top else None
                changes += self.spec(path, f, new_by[name], default, carry)
        return changes

    def spec(
        self,
        where: str,
        o: FieldSpec,
        n: FieldSpec,
        defaulted: bool,
        carry: Callable[[Any], Any] | None,
    ) -> list[Change]:
        """The changes of one field kept from `o` to `n`; `defaulted`: an upcast gives old
        events lacking it a value; `carry`: what the upcasts make of an old value."""
        changes: list[Change] = []
        if not o.required and n.required:
            if defaulted:
                changes.append(
                    self.change(
                        "field_now_required",
                        where,
                        False,
                        "old events lacking it get the upcast's default",
                    )
                )
            else:
                fix = self.fix(f"default: {{{n.name}: ...}}") if carry else "keep it optional"
                changes.append(
                    self.change(
                        "field_now_required",
                        where,
                        True,
                        f"events in the log may lack `{n.name}`; {fix}",
                    )
                )
        elif o.required and not n.required:
            changes.append(
                self.change(
                    "field_now_optional",
                    where,
                    False,
                    f"old consumers require it: deploy {self.readers} before "
                    f"{self.n.producer} leaves it out",
                )
            )
        if o.type != n.type:
            if (o.type, n.type) == ("integer", "number"):
                changes.append(
                    self.change(
                        "type_widened",
                        where,
                        False,
                        "integer became number: old integers read as numbers; old consumers "
                        "refuse fractions",
                    )
                )
            else:
                changes.append(
                    self.change(
                        "type_changed",
                        where,
                        True,
                        f"{o.type} became {n.type}: events in the log hold {o.type}s; add a "
                        "new field instead",
                    )
                )
            return changes  # the constraints of another type do not compare
        changes += self._enum(where, o, n, carry)
        changes += self._bounds(where, o, n)
        if o.items is not None and n.items is not None:
            changes += self.spec(f"{where}[]", o.items, n.items, False, None)
        if o.type == "object":
            changes += self.fields(where, o.properties, n.properties, top=False)
        return changes

    def _enum(
        self, where: str, o: FieldSpec, n: FieldSpec, carry: Callable[[Any], Any] | None
    ) -> list[Change]:
        if not o.enum and n.enum:
            return [
                self.change(
                    "type_narrowed",
                    where,
                    True,
                    f"now limited to {', '.join(map(_value, n.enum))}: events in the log may "
                    "hold any value",
                )
            ]
        if o.enum and not n.enum:
            return [
                self.change(
                    "type_widened",
                    where,
                    False,
                    "no longer limited to a list of values; old consumers refuse the others",
                )
            ]
        changes: list[Change] = []
        for v in o.enum:
            if v in n.enum:
                continue
            now = carry(v) if carry else v
            if now != v and now in n.enum:
                why = f"old events' {_value(v)} read as {_value(now)} through the upcast (values)"
                changes.append(self.change("enum_value_removed", f"{where}={v}", False, why))
                continue
            choices = ", ".join(map(_value, n.enum))
            entry = f"values: {{{n.name}: {{{_value(v)}: <one of {choices}>}}}}"
            fix = self.fix(entry) if carry else "keep the value"
            changes.append(
                self.change(
                    "enum_value_removed",
                    f"{where}={v}",
                    True,
                    f"events in the log may hold {_value(v)}; {fix}",
                )
            )
        for v in n.enum:
            if v not in o.enum:
                changes.append(
                    self.change(
                        "enum_value_added",
                        f"{where}={v}",
                        False,
                        f"old consumers refuse {_value(v)}: deploy {self.readers} before "
                        f"{self.n.producer} sends it",
                    )
                )
        return changes

    def _bounds(self, where: str, o: FieldSpec, n: FieldSpec) -> list[Change]:
        changes: list[Change] = []
        for attr, label, lower_bound in _BOUNDS:
            before, after = getattr(o, attr), getattr(n, attr)
            if before == after:
                continue
            if after is None or before is None:
                narrowed = after is not None
            else:
                narrowed = after > before if lower_bound else after < before
            said = f"{label} {_bound(before)} became {_bound(after)}"
            if narrowed:
                why = f"{said}: events in the log may be outside it; keep the old bound"
                changes.append(self.change("type_narrowed", where, True, why))
            else:
                why = f"{said}: old consumers refuse the values it adds"
                changes.append(self.change("type_widened", where, False, why))
        if o.pattern != n.pattern:
            if n.pattern is None:
                why = "its pattern was dropped: old consumers refuse what it let through"
                changes.append(self.change("type_widened", where, False, why))
            else:
                why = (
                    f"pattern {n.pattern!r} (was {o.pattern!r}): events in the log may not "
                    "match it; keep the old pattern"
                )
                changes.append(self.change("type_narrowed", where, True, why))
        return changes


_BOUNDS = (
    ("minimum", "minimum", True),
    ("maximum", "maximum", False),
    ("min_length", "minLength", True),
    ("max_length", "maxLength", False),
    ("min_items", "minItems", True),
    ("max_items", "maxItems", False),
)
"""(attribute, registry name, whether it is a lower bound) of every bound a field has."""


def _bound(v: float | int | None) -> str:
    if v is None:
        return "none"
    return str(int(v)) if float(v).is_integer() else str(v)


def _renames(
    removed: list[str],
    added: list[str],
    old_by: dict[str, FieldSpec],
    new_by: dict[str, FieldSpec],
) -> list[tuple[str, str]]:
    """(removed, added) field pairs of the same shape, each the only match of the other:
    a rename as the registry says it (one field gone, one of the same shape come)."""
    pairs = []
    for gone in removed:
        same = [c for c in added if _shape(new_by[c]) == _shape(old_by[gone])]
        if len(same) == 1:
            back = [g for g in removed if _shape(old_by[g]) == _shape(new_by[same[0]])]
            if len(back) == 1:
                pairs.append((gone, same[0]))
    return pairs
