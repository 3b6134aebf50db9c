"""How `saga run` logs: plain lines for people, or one JSON object per line for log
shippers (`--log-format json`)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")

# What every LogRecord carries; anything else on a record came as `extra=` and is data.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339, UTC), level, logger, message, the
    fields given as `extra=` (the engine's: service, saga_id, event_id, event_type,
    outcome, partition, offset) and, for an exception, its traceback as `exc_info`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


_json = False


def say(command: str, text: str) -> None:
    """Tell the operator `text` whatever the log level (a start, a stop): `COMMAND: text`
    on standard error, or a JSON line like the log's when it is JSON (so that a log
    shipper reads nothing else)."""
    if not _json:
        print(f"{command}: {text}", file=sys.stderr, flush=True)
        return
    record = logging.makeLogRecord(
        {
            "name": command.replace(" ", "."),
            "levelname": "INFO",
            "levelno": logging.INFO,
            "msg": text,
        }
    )
    print(JsonFormatter().format(record), file=sys.stderr, flush=True)


def configure(level: str, fmt: str) -> None:
    """Send the process's log to standard error at `level` (one of `LEVELS`), as text or
    JSON lines (`fmt`, one of `FORMATS`)."""
    global _json
    _json = fmt == "json"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
