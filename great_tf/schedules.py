"""The paper's learning-rate policy: a multiplier (1 - e/e_max)^0.9 applied per epoch."""

import keras
import tensorflow as tf


def poly_multiplier(epoch, epochs, power=0.9):
    """(1 - epoch/epochs)^power: 1 at the first epoch, decreasing to (1/epochs)^power at the last."""
    epoch = tf.cast(epoch, tf.float32)
    return tf.pow(tf.maximum(1.0 - epoch / float(epochs), 0.0), power)


@keras.saving.register_keras_serializable(package="great_tf")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`initial_learning_rate * poly_multiplier(epoch)`, with the epoch read off the step count.

    As an optimizer schedule it is checkpointed with the optimizer's step counter, so a resumed
    run continues on the same learning rate without a callback.
    """

    def __init__(self, initial_learning_rate, steps_per_epoch, epochs, power=0.9):
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.power = float(power)

    def epoch(self, step):
        return tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)

    def __call__(self, step):
        return self.initial_learning_rate * poly_multiplier(self.epoch(step), self.epochs, self.power)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "power": self.power,
        }


def poly_adam(learning_rate, steps_per_epoch, epochs, power=0.9):
    """Adam with the paper's poly schedule (every GREAT experiment's default optimizer)."""
    return keras.optimizers.Adam(PolyDecay(learning_rate, steps_per_epoch, epochs, power))


@keras.saving.register_keras_serializable(package="great_tf")
class PolyRamp(keras.optimizers.schedules.LearningRateSchedule):
    """`max_value * (1 - poly_multiplier(epoch))`: the paper's alpha and beta policy (supplement).

    Zero during the first epoch and growing towards `max_value` as the learning-rate multiplier
    decays, so the auxiliary terms do not impede the main task early on. Like `PolyDecay` it reads
    the epoch off an optimizer step counter, so a resumed run continues on the same value; any
    callable of the step (or a float) may replace it.
    """

    def __init__(self, max_value, steps_per_epoch, epochs, power=0.9):
        self.max_value = float(max_value)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.power = float(power)

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)
        return self.max_value * (1.0 - poly_multiplier(epoch, self.epochs, self.power))

    def get_config(self):
        return {
            "max_value": self.max_value,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "power": self.power,
        }


def scheduled_value(value, step):
    """A float, or a schedule called with the optimizer's step, as a float32 tensor."""
    if callable(value):
        return tf.cast(value(step), tf.float32)
    return tf.constant(float(value), tf.float32)
