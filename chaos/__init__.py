"""`python -m chaos`: the checkout saga under killed services, restarted brokers and poison
records, with a checker over the final state."""
