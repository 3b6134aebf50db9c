"""Injectable failure causes for the checkout services (bank errors, logistics provider
errors). Decisions are a pure function of the order id, so a retried or replayed event
gets the same answer as the first attempt."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from saga_registry.engine.errors import ConfigError


def hit(order_id: str, cause: str, rate: float) -> bool:
    """Whether `cause` strikes `order_id`, for a share `rate` of all orders."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{cause}:{order_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def rate(options: Mapping[str, str], key: str) -> float:
    """The share set by option `key` (0 when absent); a ConfigError when not in [0, 1]."""
    raw = options.get(key, "0")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"--set {key}={raw}: expected a share between 0 and 1") from None
    if not 0 <= value <= 1:
        raise ConfigError(f"--set {key}={raw}: expected a share between 0 and 1")
    return value
