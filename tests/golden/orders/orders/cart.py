"""The reactions of 'Cart'.

This module is yours: `saga codegen` wrote it once and never overwrites it. The generated
base (`orders.base.cart`) declares one method per event this service
consumes; when the registry gains a reaction, add its method here.
"""

from __future__ import annotations

from orders.base.cart import CartBase


class Cart(CartBase):
    """The 'Cart' service."""

    # Cart reacts to no event yet.
