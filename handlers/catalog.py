"""The demo catalogue: what the shop sells, at what price (minor units), and how much of it
the warehouse holds at start."""

from __future__ import annotations

from typing import Final

CURRENCY: Final = "EUR"
PRICES: Final = {"apple": 120, "pear": 150, "plum": 90, "kiwi": 60, "mango": 300}
INITIAL_STOCK: Final = 1_000_000
SOLD_OUT: Final = "durian"
"""Listed, priced, never in stock: orders for it fail with `out_of_stock`."""
PRICES_WITH_SOLD_OUT: Final = {**PRICES, SOLD_OUT: 990}
