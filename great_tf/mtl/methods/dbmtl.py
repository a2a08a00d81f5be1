"""DB-MTL, dual balancing of losses and gradients (Lin et al., 2023; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel

EPSILON = 1e-8  # LibMTL's offset inside the log and under the norms


@keras.saving.register_keras_serializable(package="great_tf")
class TaskGradientAverage(keras.layers.Layer):
    """A [T, P] state: one moving average of a flattened gradient per task (not trained)."""

    def __init__(self, num_tasks, size, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.size = int(num_tasks), int(size)
        self.values = self.add_weight(name="values", shape=(self.num_tasks, self.size),
                                      initializer="zeros", trainable=False,
                                      aggregation="only_first_replica")

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks, "size": self.size}


def dual_balanced_update(average, log_grads, step_number, beta, beta_sigma):
    """(new average, scales): the moving average of the log-loss gradients,
    m <- g + beta_t (m - g) = beta_t m + (1 - beta_t) g with beta_t = beta / t^beta_sigma
    (t = 1, 2, ...; m starts at 0, no bias correction, as LibMTL), and the scales
    max_j |m_j| / |m_i| that bring every averaged task gradient to the largest norm."""
    beta_t = beta / tf.pow(tf.cast(step_number, average.dtype), beta_sigma)
    average = log_grads + beta_t * (average - log_grads)
    norms = tf.norm(average, axis=1)
    return average, tf.reduce_max(norms) / (norms + EPSILON)


class DBMTL(MultiTaskModel):
    """Dual-balancing multi-task learning (Lin et al. 2023, "Dual-Balancing for Multi-Task
    Learning", arXiv:2308.12029): loss-scale balancing by training on log(L_i + 1e-8), and
    gradient-magnitude balancing: the shared parameters descend sum_i (max_j |m_j| / |m_i|) m_i,
    m_i the exponential moving average of task i's log-loss gradient g_i / (L_i + 1e-8),
    m_i <- beta_t m_i + (1 - beta_t) g_i, beta_t = beta / t^beta_sigma. Decoders descend their
    own log losses. Defaults: beta = 0.9, beta_sigma = 0 (LibMTL's DB_MTL, by the paper's first
    author). Gradients w.r.t. the shared parameters only: the averages are vectors over them
    (LibMTL refuses rep_grad here too).

    Exact under a strategy: the log-loss gradients are the global task gradients (all-reduced
    before anything else) divided by the global losses, so every replica updates the same
    averages. State: the [T, P] averages, a non-trainable weight (checkpointed: resume is
    exact). Cost per step: T backward passes from the feature to the encoder and one through
    the decoders for their log-loss gradients, one all-reduce of T x P floats (P the encoder's
    parameters) and one of T (the losses) besides the optimizer's; T x P floats of state.
    Gradient scales logged as `train_weight_<task>`.
    """

    method = "dbmtl"
    hyperparameters = {"beta": 0.9, "beta_sigma": 0.0}

    def __init__(self, encoder, decoders, tasks, beta=0.9, beta_sigma=0.0, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if not 0.0 <= float(beta) < 1.0 or float(beta_sigma) < 0.0:
            raise GreatError(f"dbmtl needs 0 <= beta < 1 and beta_sigma >= 0, got {beta} and {beta_sigma}")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        size = sum(int(tf.size(v)) for v in self.shared_variables)
        self.average = TaskGradientAverage(len(self.tasks), size, name="dbmtl_gradient_average")
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def network_gradients(self, step):
        losses = self.global_losses(step)
        grads = self.gradients_by_task(step, "shared")
        inverse = 1.0 / (losses + EPSILON)  # d log(L_i + eps) = dL_i / (L_i + eps)
        average = tf.cast(self.average.values, grads.matrix.dtype)
        average, scales = dual_balanced_update(average, grads.matrix * inverse[:, None],
                                               self.optimizer.iterations + 1, self.beta,
                                               self.beta_sigma)
        self.average.values.assign(tf.cast(average, self.average.values.dtype))
        for tracker, w in zip(self.weight_trackers, tf.unstack(scales)):
            tracker.update_state(w)
        update = tf.linalg.matvec(average, scales, transpose_a=True)  # sum_i scale_i m_i
        return self.combined_gradients(step, grads, grads.apply_vector(update), task_weights=inverse)
