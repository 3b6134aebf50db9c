"""The services of the 'checkout' saga: generated events and bases, and your reactions."""
