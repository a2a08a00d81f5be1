"""Dynamic weight average (Liu, Johns, Davison, CVPR 2019, Eq. 7; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.mtl.base import MultiTaskModel, TaskWeights


class EpochEnd(keras.callbacks.Callback):
    """Tells a DWA model, at the end of every epoch of `fit`, that its epoch is over."""

    def __init__(self, model):
        super().__init__()
        self.dwa = model

    def on_epoch_end(self, epoch, logs=None):
        self.dwa.end_epoch()


class DynamicWeightAverageMTL(MultiTaskModel):
    """w_i(t) = K exp(r_i(t-1) / T) / sum_k exp(r_k(t-1) / T), r_i(t-1) = L_i(t-1) / L_i(t-2),
    with L_i(t) task i's loss averaged over epoch t, K the number of tasks and temperature T = 2
    (the paper's value). The first two epochs use w_i = 1 (the paper's initialisation).

    Every step adds its losses to the epoch's sum; `fit` ends each epoch (its own callback, run
    before any other callback's `on_epoch_end`, so a checkpoint holds the shifted averages); a
    loop of your own calls `end_epoch()`. The sums and averages are non-trainable state
    (checkpointed: a resumed run goes on with the same weights). Under a strategy the losses
    summed are the global-batch losses, the same on every replica.
    """

    method = "dwa"
    hyperparameters = {"temperature": 2.0}

    def __init__(self, encoder, decoders, tasks, temperature=2.0, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.temperature = float(temperature)
        n = len(self.tasks)
        # Sum of this epoch's global losses and its step count; averages of the last two epochs.
        self.epoch_sum = TaskWeights(n, 0.0, trainable=False, name="dwa_epoch_sum")
        self.epoch_steps = TaskWeights(1, 0.0, trainable=False, name="dwa_epoch_steps")
        self.previous = TaskWeights(n, 0.0, trainable=False, name="dwa_previous")      # L(t-1)
        self.before = TaskWeights(n, 0.0, trainable=False, name="dwa_before")          # L(t-2)
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def fit_callbacks(self):
        return [EpochEnd(self)]

    def current_weights(self):
        """The weights of this epoch from the averages of the last two (1 until both exist)."""
        ready = tf.reduce_all(self.before.values > 0)
        ratios = self.previous.values / tf.where(ready, self.before.values, 1.0)
        weights = len(self.tasks) * tf.nn.softmax(ratios / self.temperature)
        return tf.where(ready, weights, tf.ones_like(weights))

    def network_gradients(self, step):
        weights = self.current_weights()
        self.accumulate(self.global_losses(step))
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.weighted_gradients(step, weights)

    def accumulate(self, global_losses):
        """Adds this step's losses to the epoch's sum."""
        self.epoch_sum.values.assign_add(tf.cast(global_losses, self.epoch_sum.values.dtype))
        self.epoch_steps.values.assign_add(tf.ones_like(self.epoch_steps.values))

    def end_epoch(self):
        """Shifts the averages: L(t-2) <- L(t-1), L(t-1) <- this epoch's mean loss (an epoch
        without a step changes nothing)."""
        steps = float(self.epoch_steps.values.numpy()[0])
        if not steps:
            return
        self.before.values.assign(self.previous.values)
        self.previous.values.assign(self.epoch_sum.values / steps)
        self.epoch_sum.values.assign(tf.zeros_like(self.epoch_sum.values))
        self.epoch_steps.values.assign(tf.zeros_like(self.epoch_steps.values))
