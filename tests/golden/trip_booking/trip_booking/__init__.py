"""The services of the 'trip_booking' saga: generated events and bases, and your reactions."""
