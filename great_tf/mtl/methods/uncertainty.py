"""Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018), as the GREAT paper compares it."""

import keras
import tensorflow as tf

from great_tf.distribute import num_replicas
from great_tf.mtl.base import MultiTaskModel, TaskWeights
from great_tf.precision import loss_scale, scale


class UncertaintyMTL(MultiTaskModel):
    """loss_i / sigma_i^2 (classification) or / 2 sigma_i^2 (regression), plus log sigma_i, with
    s_i = log sigma_i^2 learned (Kendall et al., Eq. 10 and its classification form).

    The log-variances descend Kendall's objective with the losses held constant. The network is
    trained with the weights c_i exp(-s_i) normalised to sum to 1 (the GREAT paper's fair
    comparison with GradNorm). Their optimizer is `compile(weight_optimizer=...)`.
    """

    method = "uncertainty"

    def __init__(self, encoder, decoders, tasks, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.task_weights = TaskWeights(len(self.tasks), 0.0, name="task_weights")
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def optimizer_variables(self):
        return {"weight_optimizer": [self.task_weights.values]}

    def kendall_factors(self):
        return tf.constant([1.0 if t.categorical else 0.5 for t in self.tasks],
                           self.task_weights.values.dtype)

    def normalized_weights(self):
        weights = self.kendall_factors() * tf.exp(-self.task_weights.values)
        return weights / tf.reduce_sum(weights)

    def network_gradients(self, step):
        weights = self.normalized_weights()
        log_vars = self.task_weights.values
        losses = tf.stop_gradient(step.losses)
        with tf.GradientTape() as tape:
            # The regularizer is split across replicas, whose gradients the optimizer sums.
            kendall = tf.reduce_sum(self.kendall_factors() * tf.exp(-log_vars) * losses
                                    + 0.5 * log_vars / num_replicas())
            kendall = scale(kendall, loss_scale(self.weight_optimizer))
        self.weight_optimizer.apply(tape.gradient(kendall, [log_vars]), [log_vars])
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.weighted_gradients(step, weights)
