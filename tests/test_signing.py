"""Signed events: a service signs with its own key, and an event is accepted only when
signed with a key of its registered producer; keys rotate by id."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from saga_registry.engine.bus import Record
from saga_registry.engine.buses import EmbeddedBus
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.errors import BadEnvelope, ConfigError
from saga_registry.engine.signing import HEADER, Key, Keyring
from saga_registry.registry import load_registry
from tests.autoreact import payload
from tests.test_saga_run import make_project, saga_cli, start, states, wait_terminal

OMS_OLD = Key("2026-06", b"o" * 32)
OMS_NEW = Key("2026-12", b"n" * 32)
PAYMENT = Key("p1", b"p" * 32)


def record(value: bytes = b'{"order_id": "o1"}') -> Record:
    env = Envelope.new(type="OrderCreated", source="saga/checkout/OMS", saga_id="o1", data=value)
    return env.to_record("checkout.events")


def test_an_event_signed_by_its_producer_is_accepted() -> None:
    keys = Keyring({"OMS": [OMS_NEW], "Payment": [PAYMENT]})
    keys.verify("OMS", keys.sign("OMS", record()))


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        (None, "unsigned event: events of OMS must be signed"),
        ("Payment", "event signed with key 'p1', not a key of OMS"),
    ],
)
def test_an_event_not_signed_by_its_producer_is_refused(signer: str | None, message: str) -> None:
    keys = Keyring({"OMS": [OMS_NEW], "Payment": [PAYMENT]})
    signed = record() if signer is None else keys.sign(signer, record())
    with pytest.raises(BadEnvelope, match=message):
        keys.verify("OMS", signed)


@pytest.mark.parametrize("part", ["value", "key", "ce_type", "ce_id"])
def test_a_changed_event_no_longer_verifies(part: str) -> None:
    keys = Keyring({"OMS": [OMS_NEW]})
    signed = keys.sign("OMS", record())
    if part == "value":
        forged = Record(signed.topic, signed.key, b'{"order_id": "o2"}', signed.headers)
    elif part == "key":
        forged = Record(signed.topic, b"o2", signed.value, signed.headers)
    else:
        headers = tuple((k, b"x" if k == part else v) for k, v in signed.headers)
        forged = Record(signed.topic, signed.key, signed.value, headers)
    with pytest.raises(BadEnvelope, match="wrong signature: not signed by OMS's key '2026-12'"):
        keys.verify("OMS", forged)


def test_rotation_signs_with_the_first_key_and_verifies_with_any() -> None:
    before = Keyring({"OMS": [OMS_OLD]})
    during = Keyring({"OMS": [OMS_NEW, OMS_OLD]})
    after = Keyring({"OMS": [OMS_NEW]})
    old_event = before.sign("OMS", record())
    during.verify("OMS", old_event)  # still in flight while the keys rotate
    new_event = during.sign("OMS", record())
    assert new_event.header(HEADER) is not None
    assert new_event.header(HEADER).startswith(b"2026-12:")  # type: ignore[union-attr]
    after.verify("OMS", new_event)
    with pytest.raises(BadEnvelope, match="signed with key '2026-06', not a key of OMS"):
        after.verify("OMS", old_event)


def test_a_replayed_event_keeps_its_signature() -> None:
    keys = Keyring({"OMS": [OMS_NEW]})
    signed = keys.sign("OMS", record())
    replayed = Record(
        signed.topic, signed.key, signed.value, (*signed.headers, ("saga_replayed", b"1"))
    )
    keys.verify("OMS", replayed)


def test_keys_come_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {"OMS": [{"id": "k1", "secret": "s" * 20}]}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(data))
    monkeypatch.delenv("SAGA_KEYS", raising=False)
    monkeypatch.setenv("SAGA_KEYS_FILE", str(path))
    assert Keyring.from_environment().services() == {"OMS"}
    monkeypatch.delenv("SAGA_KEYS_FILE")
    monkeypatch.setenv("SAGA_KEYS", json.dumps(data))
    assert Keyring.from_environment().services() == {"OMS"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "SAGA_KEYS: not JSON"),
        ('["OMS"]', "SAGA_KEYS: expected an object of service names to lists of keys"),
        ('{"OMS": []}', "SAGA_KEYS: OMS: expected a non-empty list of keys"),
        ('{"OMS": [{"id": "a:b", "secret": "ssssssssssssssss"}]}', "id must be a non-empty"),
        ('{"OMS": [{"id": "a", "secret": "short"}]}', r"secret must be a string of 16\+ bytes"),
        (
            '{"OMS": [{"id": "a", "secret": "ssssssssssssssss"}, '
            '{"id": "a", "secret": "tttttttttttttttt"}]}',
            "OMS: key 2: id 'a' is used twice",
        ),
    ],
)
def test_malformed_keys_are_one_line_errors(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGA_KEYS_FILE", raising=False)
    monkeypatch.setenv("SAGA_KEYS", text)
    with pytest.raises(ConfigError, match=message) as info:
        Keyring.from_environment()
    assert "\n" not in str(info.value)


def test_a_missing_keys_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read keys file .*nope.json: No such file"):
        Keyring.from_environment(str(tmp_path / "nope.json"))


def _signed_project(tmp_path: Path) -> tuple[Path, dict[str, list[dict[str, str]]]]:
    """The trip project with `signed_events: true`, and a key for each of its services."""
    root = make_project(tmp_path)
    path = root / "registry" / "saga.yaml"
    path.write_text(
        path.read_text().replace(
            "  key: booking_id\n", "  key: booking_id\n  signed_events: true\n"
        )
    )
    reg = load_registry(path)
    assert reg.signed_events
    keys = {s.name: [{"id": "k1", "secret": f"{s.name}-secret-{'x' * 16}"}] for s in reg.services}
    return root, keys


async def _publish(root: Path, records: list[Record]) -> None:
    async with EmbeddedBus(root / "bus.db") as bus:
        await bus.publish(records)


def test_only_events_signed_by_their_producer_start_sagas(tmp_path: Path) -> None:
    root, keys = _signed_project(tmp_path)
    reg = load_registry(root / "registry" / "saga.yaml")
    first = next(s for s in reg.services if s.initiates)
    event = first.initiates[0]
    keyring = Keyring(
        {name: [Key(k["id"], k["secret"].encode()) for k in ks] for name, ks in keys.items()}
    )
    wrong = next(s.name for s in reg.services if s.name != first.name)

    def trip(n: int) -> Record:
        data = json.dumps(payload(reg, event, f"trip-{n}")).encode()
        env = Envelope.new(type=event, source="tests", saga_id=f"trip-{n}", data=data)
        return env.to_record(reg.events_topic.name)

    proc = start(root, env={"SAGA_KEYS": json.dumps(keys)})
    try:
        asyncio.run(
            _publish(
                root,
                [
                    keyring.sign(first.name, trip(0)),  # signed by its producer
                    trip(1),  # unsigned, as from any client
                    keyring.sign(wrong, trip(2)),  # signed by another service
                ],
            )
        )
        ended = wait_terminal(root, 1)
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert set(ended) == {"trip-0"}, ended
    listed = saga_cli(root, "embedded:bus.db", "dlq", "list")
    errors = {line.split("\t")[2]: line for line in listed.stdout.splitlines()}
    assert "unsigned event" in errors["trip-1"], listed.stdout
    assert f"wrong signature: not signed by {first.name}'s key 'k1'" in errors["trip-2"]
    assert states(root, first.name).keys() == {"trip-0"}


def test_a_signed_registry_without_keys_is_refused_in_one_line(tmp_path: Path) -> None:
    root, keys = _signed_project(tmp_path)
    del keys["Billing"]
    proc = start(root, env={"SAGA_KEYS": json.dumps(keys)})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1 and "wants signed events" in lines[0] and "no key for Billing" in lines[0]
    )
