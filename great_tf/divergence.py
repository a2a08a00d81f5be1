"""A run whose loss becomes nan or inf has diverged: everything it trains afterwards is noise, and
its tables would look like results (accuracy at chance, printed to two decimals). Every trainer
and sweep fits through `great_tf.runs.fit_resumable`, which stops such a run at the first step that
logs a non-finite value, with one line (`great_tf.errors.TrainingDiverged`, a `GreatError`)."""

import math

import keras

from great_tf.errors import TrainingDiverged

HINT = ("the run diverged: lower what scales its losses or steps (alpha_max, beta_max, alpha, the "
        "method's hyperparameters, the learning rate) and start it again without --resume (its "
        "checkpoints hold the same run)")


def non_finite(logs):
    """[(name, value)] of the logged values that are nan or inf, the loss first."""
    found = []
    for name, value in (logs or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue  # not a scalar: not ours to judge
        if not math.isfinite(number):
            found.append((name, number))
    return sorted(found, key=lambda item: item[0] != "loss")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDiverged` after the first training step whose logs hold nan or inf. Keras'
    `TerminateOnNaN` only ends `fit` quietly, and the run would then be evaluated and reported."""

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = non_finite(logs)
        if bad:
            values = ", ".join(f"{name} is {value}" for name, value in bad)
            raise TrainingDiverged(f"training stopped at epoch {self._epoch + 1}, step {batch + 1}: "
                                   f"{values}; {HINT}")
