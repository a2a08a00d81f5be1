"""The one exception type that the trainers turn into a one-line message."""


class GreatError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it."""
