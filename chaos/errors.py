"""What stops a chaos run before it can judge anything."""


class ChaosError(Exception):
    """A one-line reason the run could not be set up or carried out."""
