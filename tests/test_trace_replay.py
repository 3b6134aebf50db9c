"""`saga trace` labels a record `saga dlq replay` put back as a replayed copy meant for the
service whose letter it was, not as a duplicate, and shows that the other services passed
it."""

from __future__ import annotations

import json
from pathlib import Path

from saga_registry.engine.buses import EmbeddedBus
from tests.runtime_kit import event, publish
from tests.test_dlq_replay import registry_file, saga, services  # noqa: F401  (fixture)


async def test_trace_labels_a_replayed_copy_and_who_passed_it(
    registry_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    bus_url = f"embedded:{tmp_path / 'bus.db'}"
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    try:
        inventory, history = await services(
            bus, registry_file, tmp_path, "Inventory", "OrderHistory"
        )
        reg = inventory.registry
        inventory.service.fail_sagas.add("r1")
        await publish(bus, reg, event("OrderCreated", "r1"))
        assert await inventory.consume(1) == ["dead"]
        assert await history.consume(1) == ["applied"]
        inventory.service.fail_sagas.clear()
        done = await saga(registry_file, bus_url, "dlq", "replay", "--saga", "r1")
        assert done.stdout.startswith("replayed 1 record(s)"), done.output
        assert await inventory.consume(1) == ["applied"]
        assert await history.consume(1) == ["passed"]
        await inventory.crash()
        await history.crash()
    finally:
        await bus.stop()

    # The kit names a service's database after the saga too.
    db = f"sqlite:///{tmp_path}/{reg.name}_{{service}}.db"
    shown = await saga(registry_file, bus_url, "trace", "r1", "--db", db, "--json")
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)["events"]
    assert [r["event_type"] for r in rows] == ["OrderCreated", "OrderCreated"], shown.stdout
    original, copy = rows
    assert original["actions"]["Inventory"]["action"] == "dead-lettered"
    assert original["actions"]["OrderHistory"]["action"] == "reacted"
    assert copy["note"] == "replay for Inventory"
    assert copy["actions"]["Inventory"]["action"] == "reacted"
    assert copy["actions"]["OrderHistory"] == {
        "action": "passed",
        "detail": "replay for Inventory",
    }

    text = await saga(registry_file, bus_url, "trace", "r1", "--db", db)
    assert text.exit_code == 0, text.output
    line = text.stdout.splitlines()[2]
    assert "(replay for Inventory)" in line and "(duplicate)" not in line, text.stdout
    assert "OrderHistory: passed (replay for Inventory)" in line, text.stdout


async def test_a_copy_relayed_twice_is_still_a_duplicate(
    registry_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same record published twice (as `saga start` and a running relay may) is taken
    in by every service the first time and skipped the second: no replay."""
    bus_url = f"embedded:{tmp_path / 'bus.db'}"
    bus = EmbeddedBus(tmp_path / "bus.db")
    await bus.start()
    try:
        inventory, history = await services(
            bus, registry_file, tmp_path, "Inventory", "OrderHistory"
        )
        reg = inventory.registry
        (created,) = await publish(bus, reg, event("OrderCreated", "r2"))
        await bus.publish([created.to_record(reg.events_topic.name)])
        assert await inventory.consume(2) == ["applied", "duplicate"]
        assert await history.consume(2) == ["applied", "duplicate"]
        await inventory.crash()
        await history.crash()
    finally:
        await bus.stop()
    # The kit names a service's database after the saga too.
    db = f"sqlite:///{tmp_path}/{reg.name}_{{service}}.db"
    shown = await saga(registry_file, bus_url, "trace", "r2", "--db", db, "--json")
    assert shown.exit_code == 0, shown.output
    rows = [r for r in json.loads(shown.stdout)["events"] if r["event_type"] == "OrderCreated"]
    assert [r["note"] for r in rows] == ["", "duplicate"]
    assert rows[1]["actions"]["Inventory"] == {"action": "skipped", "detail": "duplicate"}
