"""`python -m bench`: sagas per second and latency of the checkout saga on either bus,
against a bare relay chain on the same transport."""
