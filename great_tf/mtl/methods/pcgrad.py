"""PCGrad, projecting conflicting gradients (Yu et al., NeurIPS 2020; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.mtl.base import MultiTaskModel
from great_tf.mtl.gradients import check_space


def projection_order(num_tasks, seed):
    """[T, T-1]: row i lists the other tasks in a random order (a uniform permutation from a
    stateless draw, so every replica given the same `seed` projects in the same order)."""
    keys = tf.random.stateless_uniform([num_tasks, num_tasks], seed, dtype=tf.float32)
    keys = tf.linalg.set_diag(keys, tf.fill([num_tasks], 2.0))  # task i itself sorts last
    return tf.argsort(keys, axis=1)[:, : num_tasks - 1]


def pcgrad_weights(gram, order):
    """The weights w with sum_i pc_i = sum_k w_k g_k.

    Each projected gradient stays a combination of the ORIGINAL gradients, pc_i = sum_k C_ik g_k,
    so the projection needs only inner products: pc_i . g_j = (C G)_ij, and projecting pc_i on
    the normal plane of a conflicting g_j (pc_i . g_j < 0) subtracts (pc_i . g_j / |g_j|^2) from
    C_ij. w is the column sum of C (LibMTL's `batch_weight`).
    """
    num_tasks = gram.shape[0]
    rows = []
    for i in range(num_tasks):
        row = tf.one_hot(i, num_tasks, dtype=gram.dtype)
        for k in range(num_tasks - 1):
            j = order[i, k]
            inner = tf.tensordot(row, gram[:, j], 1)
            step = tf.math.divide_no_nan(tf.minimum(inner, 0.0), gram[j, j])
            row -= step * tf.one_hot(j, num_tasks, dtype=gram.dtype)
        rows.append(row)
    return tf.add_n(rows)


class PCGradMTL(MultiTaskModel):
    """Gradient surgery (Yu et al. 2020, Algorithm 1): for each task i, its gradient g_i is
    projected in turn on the normal plane of every other task's ORIGINAL gradient g_j it
    conflicts with (g_i^PC . g_j < 0): g_i^PC <- g_i^PC - (g_i^PC . g_j / |g_j|^2) g_j, the other
    tasks taken in a random order drawn afresh for each i (as LibMTL does; its shuffled list
    also holds task i itself, which can only matter from three tasks on: the paper's others-only
    order is used here); the shared part descends sum_i g_i^PC. Decoders get their own task
    gradients (raw losses), as in LibMTL.

    The projections only read the Gram matrix, so the update is sum_k w_k g_k with weights
    computed from G G^T: this runs in both gradient spaces (LibMTL refuses its `rep_grad`; here
    `space="feature"` projects the gradients at the shared feature, whose global inner products
    are exact). The random order comes from a stateless draw seeded by (`seed`, the optimizer's
    step): identical on every replica, reproducible on resume.

    Defaults: `seed=0`, `space="shared"` (the paper's shared parameters). Cost per step, shared
    space: T backward passes from the feature to the encoder, one all-reduce of T x P floats (P
    the encoder's parameters) plus the usual gradient all-reduce; feature space: one backward
    pass through the encoder and a T x T all-reduce. The projections cost O(T^3) on the Gram
    matrix. Weights logged as `train_weight_<task>`.
    """

    method = "pcgrad"
    hyperparameters = {"seed": 0, "space": "shared"}

    def __init__(self, encoder, decoders, tasks, seed=0, space="shared", **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.seed = int(seed)
        self.space = check_space(space)
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def current_order(self):
        """This step's projection order, the same on every replica."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        return projection_order(len(self.tasks), seed)

    def network_gradients(self, step):
        grads = self.gradients_by_task(step, self.space)
        weights = pcgrad_weights(grads.gram(), self.current_order())
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.combined_gradients(step, grads, grads.apply_weights(weights))
