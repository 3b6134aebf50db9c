"""A test kit for the runtime: the checkout registry on fresh topics, scripted services
built on the generated bases, and helpers to publish and collect records."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import orders.base as bases
import orders.events as ev
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from saga_registry.engine.bus import Bus, Delivery, Subscription
from saga_registry.engine.database import Database, database_url
from saga_registry.engine.envelope import Envelope
from saga_registry.engine.runner import RunnerSettings, ServiceRunner
from saga_registry.registry import Registry, load_registry
from saga_registry.registry.model import Topic
from tests.helpers import ORDERS

SAMPLES: dict[str, dict[str, Any]] = {
    "OrderCreated": {
        "customer_id": "c1",
        "total": 200,
        "currency": "EUR",
        "items": [{"sku": "apple", "quantity": 2, "unit_price": 100}],
    },
    "InventoryReserved": {
        "customer_id": "c1",
        "reservation_id": "r1",
        "total": 200,
        "currency": "EUR",
    },
    "InventoryReservationFailed": {"reason": "out_of_stock"},
    "PaymentSucceeded": {"customer_id": "c1", "payment_id": "p1", "amount": 200, "currency": "EUR"},
    "PaymentFailed": {"reason": "bank_error"},
    "OrderCancelled": {"cause": "PaymentFailed", "reason": "bank_error"},
    "InventoryReleased": {"reservation_id": "r1", "cause": "PaymentFailed", "reason": "bank_error"},
    "RefundSucceeded": {
        "payment_id": "p1",
        "amount": 200,
        "currency": "EUR",
        "reason": "delivery_failed",
    },
    "DeliveryScheduled": {"delivery_id": "d1", "carrier": "ACME", "eta_days": 2},
    "DeliveryFailed": {"reason": "provider_error"},
}

FAST = RunnerSettings(
    max_attempts=3, backoff_s=0.01, backoff_max_s=0.05, batch=100, poll_timeout_s=0.2
)


class Crash(BaseException):
    """Stands for the process dying mid-transaction: not an Exception, so nothing in the
    runner catches it, exactly like a kill."""


def event(kind: str, saga: str) -> Any:
    """A valid event of type `kind` for saga `saga`."""
    return ev.EVENT_TYPES[kind].from_dict({"order_id": saga, **SAMPLES[kind]})


def fresh_registry() -> Registry:
    """The checkout registry on topics (and groups) no other test uses."""
    reg = load_registry(ORDERS)
    tag = uuid.uuid4().hex[:10]
    return dataclasses.replace(
        reg,
        name=f"t{tag}",
        events_topic=Topic(f"t{tag}.events", 3),
        dead_letter_topic=Topic(f"t{tag}.dlq", 1),
    )


def scripted(service: str) -> Any:
    """An instance of `service` whose every reaction records the call in its own table and
    emits the first event the registry allows. `fail` (event types), `fail_sagas` (saga
    ids) and `crash` script failures; `emit_override` replaces what is emitted."""
    module = __import__(bases.SERVICE_MODULES[service].replace(".", ".base.", 1), fromlist=["x"])
    base = getattr(module, f"{service}Base")
    md = MetaData()
    calls = Table(
        "calls",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64)),
        Column("event_type", String(64)),
    )

    def reaction(event_type: str) -> Callable[..., Any]:
        async def react(self: Any, event: Any, ctx: Any) -> Any:
            await ctx.db.execute(insert(calls).values(event_id=ctx.event_id, event_type=event_type))
            if event_type in self.crash:
                raise Crash(event_type)
            if event_type in self.fail or ctx.saga_id in self.fail_sagas:
                raise ValueError(f"scripted failure in {event_type}")
            emits = self.reactions[event_type]
            if self.emit_override:
                return self.emit_override(ctx.saga_id)
            return globals()["event"](emits[0], ctx.saga_id) if emits else None

        return react

    methods: dict[str, Any] = {m: reaction(e) for e, m in base.handler_names.items()}
    methods.update(metadata=md, calls=calls)
    cls = type(service, (base,), methods)
    obj = cls()
    obj.fail, obj.fail_sagas, obj.crash, obj.emit_override = set(), set(), set(), None
    return obj


@dataclasses.dataclass
class Harness:
    """One service's runner on a bus and a database, restartable."""

    registry: Registry
    service: Any
    bus: Bus
    db_url: str
    db: Database | None = None
    runner: ServiceRunner | None = None
    sub: Subscription | None = None

    async def start(self) -> ServiceRunner:
        self.db = Database(
            database_url(self.db_url, f"{self.registry.name}_{self.service.service_name}"),
            self.service.metadata,
        )
        await self.db.start()
        self.runner = ServiceRunner(
            self.registry, self.service, ev.EVENT_TYPES, self.db, self.bus, settings=FAST
        )
        self.sub = await self.bus.subscribe(self.runner.group, [self.runner.topic])
        return self.runner

    async def crash(self) -> None:
        """Drop everything without committing offsets or relaying (like kill -9)."""
        if self.sub:
            await self.sub.close()
        if self.db:
            await self.db.stop()
        self.sub = self.runner = self.db = None

    async def fetch(self, n: int, timeout: float = 30.0) -> list[Delivery]:
        assert self.sub is not None
        got: list[Delivery] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < n and asyncio.get_running_loop().time() < deadline:
            got += await self.sub.fetch(n - len(got), 0.5)
        assert len(got) >= n, f"expected {n} deliveries, got {len(got)}"
        return got

    async def consume(self, n: int) -> list[str]:
        """Fetch `n` deliveries, handle them, commit; the outcome of each."""
        assert self.runner is not None and self.sub is not None
        batch = await self.fetch(n)
        outcomes = [await self.runner.handle(d) for d in batch]
        await self.sub.commit(batch)
        return outcomes

    async def scalar(self, stmt: Any) -> Any:
        assert self.db is not None
        async with self.db.transaction() as conn:
            return await conn.scalar(stmt)

    async def rows(self, stmt: Any) -> list[Any]:
        assert self.db is not None
        async with self.db.transaction() as conn:
            return list((await conn.execute(stmt)).all())

    async def calls(self) -> int:
        return int(await self.scalar(select(func.count()).select_from(self.service.calls)))


async def publish(bus: Bus, registry: Registry, *events: Any) -> list[Envelope]:
    """Publish `events` as if produced by their producers; their envelopes."""
    envs = [
        Envelope.new(type=e.event_type, source="tests", saga_id=e.saga_id(), data=e.to_json())
        for e in events
    ]
    await bus.publish([x.to_record(registry.events_topic.name) for x in envs])
    return envs
