"""Dynamic weight average (Liu, Johns, Davison, CVPR 2019, Eq. 7; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.mtl.base import MultiTaskModel, TaskWeights


class DynamicWeightAverageMTL(MultiTaskModel):
    """w_i(t) = K exp(r_i(t-1) / T) / sum_k exp(r_k(t-1) / T), r_i(t-1) = L_i(t-1) / L_i(t-2),
    with L_i(t) task i's loss averaged over epoch t, K the number of tasks and temperature T = 2
    (the paper's value). The first two epochs use w_i = 1 (the paper's initialisation).

    The epoch averages are kept in non-trainable state (checkpointed, so a resumed run goes on
    with the same weights); the epoch is read off the optimizer's step counter, so the model needs
    `steps_per_epoch` (set by `great_tf.mtl.compile_mtl`, or pass it). Under a strategy the losses
    averaged are the global-batch losses, the same on every replica.
    """

    method = "dwa"
    hyperparameters = {"temperature": 2.0}

    def __init__(self, encoder, decoders, tasks, temperature=2.0, steps_per_epoch=None, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.temperature = float(temperature)
        self.steps_per_epoch = steps_per_epoch
        n = len(self.tasks)
        # Sum of this epoch's global losses; averages of the last two finished epochs.
        self.epoch_sum = TaskWeights(n, 0.0, trainable=False, name="dwa_epoch_sum")
        self.previous = TaskWeights(n, 0.0, trainable=False, name="dwa_previous")      # L(t-1)
        self.before = TaskWeights(n, 0.0, trainable=False, name="dwa_before")          # L(t-2)
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

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
        """Adds this step's losses to the epoch's sum; at the epoch's last step, shifts the
        averages (the optimizer's step counter is this step's index before `apply`)."""
        if not self.steps_per_epoch:
            raise ValueError("DWA needs steps_per_epoch: pass it, or compile with "
                             "great_tf.mtl.compile_mtl")
        total = self.epoch_sum.values + tf.cast(global_losses, self.epoch_sum.values.dtype)
        last_step = tf.equal((self.optimizer.iterations + 1) % self.steps_per_epoch, 0)
        average = total / float(self.steps_per_epoch)
        self.before.values.assign(tf.where(last_step, self.previous.values, self.before.values))
        self.previous.values.assign(tf.where(last_step, average, self.previous.values))
        self.epoch_sum.values.assign(tf.where(last_step, tf.zeros_like(total), total))
