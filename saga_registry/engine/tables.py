"""The engine's own tables in each service's database.

They live beside the service's tables in the same database so that one transaction holds
the inbox row, the reaction's writes and the outbox rows together.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

inbox = Table(
    "saga_inbox",
    metadata,
    # CloudEvents makes `source` + `id` unique, not `id` alone.
    Column("event_id", String(128), primary_key=True),
    Column("source", String(255), primary_key=True),
    Column("event_type", String(128), nullable=False),
    Column("saga_id", String(256), nullable=False),
    Column("received_at", Float, nullable=False),
    # Where the event sits in the log: a saga lives in one partition, so the offset orders
    # its events (timestamps cannot: a batch shares one). NULL for rows of older versions.
    Column("log_partition", Integer, nullable=True),
    Column("log_offset", BigInteger, nullable=True),
    Index("ix_saga_inbox_saga", "saga_id"),
    # The prune pass finds rows older than the dedupe window by it (`retention`).
    Index("ix_saga_inbox_received", "received_at"),
)
"""Every event this service has taken in: the dedupe key, and the saga's history here."""

outbox = Table(
    "saga_outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float, nullable=True),
    Index("ix_saga_outbox_unsent", "sent_at", "id"),
)
"""Events emitted in a committed transaction, waiting for the relay (sent_at NULL)."""

saga_state = Table(
    "saga_state",
    metadata,
    Column("saga_id", String(256), primary_key=True),
    Column("state", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
    # The saga's first event's id: one correlation id for its whole life, deferred answers
    # and deadline events included. NULL for rows of older versions.
    Column("correlation_id", String(128), nullable=True),
    # The event that moved the saga into `state`: the cause of a deadline or a deferred
    # answer given in that state.
    Column("entered_by", String(128), nullable=True),
    Column("started_at", Float, nullable=True),
    # The trace context of the span that moved the saga into `state` (W3C traceparent and
    # tracestate), written only while tracing is on: a deadline's event and a deferred
    # answer given in that state are its children, so the saga stays one trace.
    Column("traceparent", String(64), nullable=True),
    Column("tracestate", String(512), nullable=True),
)
"""This service's copy of each saga's state (all services apply the same ordered log)."""

skipped = Table(
    "saga_skipped",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("saga_id", String(256), nullable=False),
    Column("state", String(64), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("log_partition", Integer, nullable=True),
    Column("log_offset", BigInteger, nullable=True),
    Index("ix_saga_skipped_saga", "saga_id"),
    Index("ix_saga_skipped_at", "at"),
)
"""Events recorded but not applied: duplicates and events not allowed in the state."""

timers = Table(
    "saga_deadline_timers",
    metadata,
    Column("saga_id", String(256), primary_key=True),
    # The deadline's stable key (`Deadline.key`): its name, not its place in the list, so
    # that a registry adding or reordering deadlines leaves armed timers on their own.
    Column("deadline", String(128), primary_key=True),
    Column("state", String(64), nullable=False),
    Column("due_at", Float, nullable=False),
    # How long the deadline was when armed: `saga compat` names timers a new registry
    # shortens or lengthens. NULL for rows moved from the index-keyed table.
    Column("within_s", Float, nullable=True),
    Index("ix_saga_deadline_timers_due", "due_at"),
)
"""Pending registry deadlines this service fires (it produces their event). Databases of
older versions kept them by the deadline's index in `saga_timers`; `engine.timer_keys`
moves those rows here at start."""

parked = Table(
    "saga_parked",
    metadata,
    Column("saga_id", String(256), primary_key=True),
    Column("event_id", String(128), nullable=False),
    Column("error", Text, nullable=False),
    Column("at", Float, nullable=False),
)
"""Sagas whose event failed every retry here: their later events wait in the dead-letter
topic too, so that a replay applies them in order."""

parked_held = Table(
    "saga_parked_held",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("saga_id", String(256), nullable=False, index=True),
    Column("event_id", String(128), nullable=False),
    Column("at", Float, nullable=False),
    # The record as it came, to put it back if no replay brings it.
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("requeued", Boolean, nullable=False, default=False),
)
"""The events dead-lettered behind a parked saga's head, in the order they came (`id`)."""

identity = Table(
    "saga_identity",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("service", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    # The owner label the bus may still carry for this database: set when a database is
    # adopted on purpose (`saga db adopt`), until its own commits replace the label.
    Column("accepts", String(64), nullable=True),
)
"""This database's identity (one row): the owner label of every offset its service
commits, so that a database that is not the group's is noticed at start."""

positions = Table(
    "saga_positions",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("log_partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)
"""The high-water mark: per partition, the offset after the last record this database
has handled (written before the offset is committed on the bus, so never behind it)."""
