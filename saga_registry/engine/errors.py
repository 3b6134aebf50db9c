"""Every error the runtime raises. Callers catch by class; the CLI turns each into one line."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the runtime's errors."""


class ConfigError(EngineError):
    """A setting is wrong (a bad URL, an unknown bus scheme, a missing handler)."""


class BusUnavailable(EngineError):
    """The bus cannot be reached or used (an unreachable broker, an unwritable log file)."""


class BusRefused(BusUnavailable):
    """The broker answers but refuses this client (wrong credentials, a certificate not
    trusted): waiting will not help."""


class BadEnvelope(EngineError):
    """A record is not a valid CloudEvent of this saga (missing attribute, unknown type,
    invalid payload). Such records go to the dead-letter topic at once."""


class ForbiddenEmit(EngineError):
    """A reaction returned an event the registry does not let it emit."""


class DatabaseUnavailable(EngineError):
    """A service's database cannot be opened or reached."""


class DatabaseMismatch(EngineError):
    """A service's database is not the one its consumer group's position on the bus was
    reached with (emptied, replaced, restored from an older copy, another replica's)."""


class DatabaseDamaged(EngineError):
    """A service's database is damaged or its storage fails (a malformed file, an I/O
    error): not a passing outage and not a reaction's fault. The service stops; nothing is
    retried, dead-lettered or committed for it."""
