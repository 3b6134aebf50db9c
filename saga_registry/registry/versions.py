"""Event versions: how a version travels with an event, how an older version's payload
reads as the current one, and what an older version's payload looked like.

An event declares `version: N` and one upcast per older version (`from: 1` ... `from:
N-1`). Each upcast reads version n as n+1 in three moves: renamed fields take their new
names, listed enum values their new values, and fields version n lacked their defaults.
A consumer applies the upcasts in turn, so any older event reads as the current one with
no hand-written code. The older versions' payload fields are derived backwards through
the same upcasts (`fields_at`): the registry holds one payload, the current one.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from saga_registry.registry.model import Event, FieldSpec, Upcast

_VERSION = re.compile(r"[:/.]v([0-9]{1,6})(?:\.json)?$")
_INTEGER = re.compile(r"-?[0-9]+")


def dataschema(saga: str, event: str, version: int) -> str:
    """The CloudEvents `dataschema` of `event` at `version` in saga `saga`: a URN, also
    the `$id` of the event's published JSON Schema of that version."""
    return f"urn:saga:{saga}:{event}:v{version}"


def version_of(dataschema: str) -> int | None:
    """The version a `dataschema` names (`...:v2`, `.../v2`, `....v2.json`), or None when
    it names none. An event without a `dataschema` is version 1."""
    match = _VERSION.search(dataschema)
    return int(match.group(1)) if match else None


def version_in(event: Event, dataschema: str) -> int:
    """The version of `event` an event carrying `dataschema` holds (1 without one);
    raises ValueError saying why when this registry cannot read it: no version named, or
    one newer than the registry's (consumers are deployed before producers)."""
    if not dataschema:
        return 1
    version = version_of(dataschema)
    if version is None:
        raise ValueError(
            f"dataschema {dataschema!r} of {event.name} names no version "
            "(expected it to end in :v<N>)"
        )
    if version > event.version:
        raise ValueError(
            f"{event.name} version {version} is newer than this registry's "
            f"{event.version}: deploy the new registry to its consumers first"
        )
    if version < 1:
        raise ValueError(f"{event.name} version {version} does not exist")
    return version


def upcast(event: Event, payload: dict[str, Any], from_version: int) -> dict[str, Any]:
    """`payload` of `event` at `from_version` (below the current version) read as the
    current version: a new dict; `payload` is left as it is. Raises `ValueError` for a
    version `event` never had."""
    if not 1 <= from_version <= event.version:
        raise ValueError(f"{event.name} has versions 1 to {event.version}, not {from_version}")
    data = dict(payload)
    for step in event.upcasts[from_version - 1 :]:
        data = _one_step(step, data)
    return data


def _one_step(step: Upcast, data: dict[str, Any]) -> dict[str, Any]:
    for old, new in step.rename:
        if old in data:
            data[new] = data.pop(old)
    for name, _ in step.values:
        if name in data:
            data[name] = mapped(step, name, data[name])
    for name, value in step.defaults:
        data.setdefault(name, value)
    return data


def mapped(step: Upcast, name: str, value: Any) -> Any:
    """`value` of field `name` (by its new name) as `step` maps it: its new value if the
    step lists it, else unchanged."""
    for field_name, pairs in step.values:
        if field_name == name:
            for old_value, new_value in pairs:
                if is_old_value(value, old_value):
                    return new_value
    return value


def is_old_value(value: Any, old: Any) -> bool:
    """Whether payload `value` is `old`, an older value of a value map. The map's keys are
    YAML keys, so text as written: an integer matches the text of its digits (`{2: 1}`).
    `==` alone would take True for 1; an enum value is a string or an integer."""
    if isinstance(value, bool) or isinstance(old, bool):
        return value is old
    if isinstance(value, int) and isinstance(old, str):
        return _INTEGER.fullmatch(old) is not None and int(old) == value
    return type(value) is type(old) and bool(value == old)


def old_value_of(field: FieldSpec, old: Any) -> Any:
    """The older value `old` (a value map's key) as a value of `field`: an integer for an
    integer field whose key is the text of one, else `old` as it is."""
    if field.type == "integer" and isinstance(old, str) and _INTEGER.fullmatch(old):
        return int(old)
    return old


def fields_at(event: Event, version: int) -> tuple[FieldSpec, ...]:
    """The payload fields of `event` at `version` (1 to its current version), derived
    backwards from the current fields: each upcast's defaulted fields did not exist yet,
    its renamed fields had their old names, and a field with mapped values took the old
    values where the current enum has the new ones (values not mapped stay)."""
    if not 1 <= version <= event.version:
        raise ValueError(f"{event.name} has versions 1 to {event.version}, not {version}")
    fields = event.fields
    for step in reversed(event.upcasts[version - 1 :]):
        fields = _one_step_back(step, fields)
    return fields


def _one_step_back(step: Upcast, fields: tuple[FieldSpec, ...]) -> tuple[FieldSpec, ...]:
    defaulted = {name for name, _ in step.defaults}
    old_name = {new: old for old, new in step.rename}
    maps = dict(step.values)
    older = []
    for f in fields:
        if f.name in defaulted:
            continue
        if f.name in maps and f.enum:
            pairs = maps[f.name]
            targets = {new for _, new in pairs}
            olds = [old_value_of(f, old) for old, _ in pairs]
            kept = [v for v in f.enum if v not in targets]
            f = dataclasses.replace(f, enum=tuple(dict.fromkeys([*olds, *kept])))
        older.append(dataclasses.replace(f, name=old_name.get(f.name, f.name)))
    return tuple(older)
