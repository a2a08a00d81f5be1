"""The exception types that the trainers turn into a one-line message."""


class GreatError(Exception):
    """A user-facing error: the message says what was wrong and how to fix it."""


class TrainingDiverged(GreatError):
    """A training run's loss (or another logged value) became nan or inf (great_tf.divergence)."""
