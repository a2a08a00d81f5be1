"""MGDA, the min-norm common descent direction (Sener & Koltun, NeurIPS 2018).

See docs/design.md#mtl-methods.
"""

import itertools

import keras
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel
from great_tf.mtl.gradients import check_space

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
MAX_ITERATIONS = 250   # the reference solver's limits
STOP_CHANGE = 1e-5


def min_norm_of_two(v1v1, v1v2, v2v2):
    """Algorithm 1 of the paper: gamma in [0, 1] minimising |gamma v1 + (1 - gamma) v2|^2 from
    the three inner products, and that squared norm. (The reference code clips gamma to
    [0.001, 0.999]; the paper's exact ends are used here.)"""
    inside = tf.math.divide_no_nan(v2v2 - v1v2, v1v1 + v2v2 - 2.0 * v1v2)
    gamma = tf.where(v1v2 >= v1v1, tf.ones_like(v1v1),
                     tf.where(v1v2 >= v2v2, tf.zeros_like(v1v1), inside))
    cost = tf.where(v1v2 >= v1v1, v1v1, tf.where(v1v2 >= v2v2, v2v2, v2v2 + gamma * (v1v2 - v2v2)))
    return gamma, cost


def best_pair(gram):
    """The min-norm point over the best pair of tasks (the reference's start; exact for T = 2)."""
    num_tasks = gram.shape[0]
    pairs = list(itertools.combinations(range(num_tasks), 2))
    first = tf.constant([i for i, _ in pairs])
    second = tf.constant([j for _, j in pairs])
    gamma, cost = min_norm_of_two(tf.gather_nd(gram, tf.stack([first, first], 1)),
                                  tf.gather_nd(gram, tf.stack([first, second], 1)),
                                  tf.gather_nd(gram, tf.stack([second, second], 1)))
    best = tf.argmin(cost, output_type=tf.int32)  # the first pair on ties, as the reference
    return (gamma[best] * tf.one_hot(first[best], num_tasks, dtype=gram.dtype)
            + (1.0 - gamma[best]) * tf.one_hot(second[best], num_tasks, dtype=gram.dtype))


def min_norm_weights(gram, max_iterations=MAX_ITERATIONS, stop_change=STOP_CHANGE):
    """Weights on the simplex minimising |sum_i w_i g_i|^2 from the Gram matrix: Frank-Wolfe with
    exact line search (the paper's Algorithm 2) from the best pair, stopped when the weights
    move by less than `stop_change` (L1) or after `max_iterations`, as the reference code."""
    num_tasks = gram.shape[0]
    if num_tasks == 1:
        return tf.ones([1], gram.dtype)
    weights = best_pair(gram)
    if num_tasks == 2:
        return weights

    def frank_wolfe_step(i, weights, done):
        vertex = tf.argmin(tf.linalg.matvec(gram, weights), output_type=tf.int32)
        gamma, _ = min_norm_of_two(tf.tensordot(weights, tf.linalg.matvec(gram, weights), 1),
                                   tf.tensordot(weights, gram[:, vertex], 1), gram[vertex, vertex])
        moved = gamma * weights + (1.0 - gamma) * tf.one_hot(vertex, num_tasks, dtype=gram.dtype)
        done = tf.reduce_sum(tf.abs(moved - weights)) < stop_change
        return i + 1, tf.where(done, weights, moved), done

    _, weights, _ = tf.while_loop(lambda i, w, done: tf.logical_and(i < max_iterations, ~done),
                                  frank_wolfe_step, (tf.constant(0), weights, tf.constant(False)))
    return weights


def gradient_normalizers(normalization, norms, losses):
    """LibMTL's (and the reference code's) optional gradient normalisation: g_i / n_i with
    n_i = 1 ("none"), |g_i| ("l2"), L_i ("loss") or L_i |g_i| ("loss+"). Zero stays 1."""
    n = {"none": tf.ones_like(norms), "l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    return tf.where(n > 0, n, tf.ones_like(n))


class MGDAMTL(MultiTaskModel):
    """Multiple-gradient descent as multi-objective optimisation (Sener & Koltun 2018): the shared
    part descends the min-norm point of the convex hull of the task gradients,
    min_{w in simplex} |sum_i w_i g_i|^2 (Eq. 3), solved by Frank-Wolfe (Algorithm 2; for two
    tasks the closed form of Algorithm 1 is exact); decoders descend their own task losses
    (Algorithm 2's task-specific step, also LibMTL's).

    `normalization`: "none" (default, the paper) or LibMTL's "l2", "loss" (global batch losses),
    "loss+": the weights are solved for the normalised gradients g_i / n_i and the shared update
    is sum_i w_i g_i / n_i (LibMTL's parameter-space rule; the original code applies w_i to the
    raw losses).

    `space="shared"` (default): MGDA on the shared parameters. `space="feature"`: MGDA-UB
    (Section 3.3), the min-norm point of the gradients at the shared feature Z, inner products
    over the whole global batch as the reference code takes them (LibMTL first sums over the
    batch), a cheap upper-bound surrogate.

    Cost per step, shared: T backward passes from the feature to the encoder and one T x P
    all-reduce (P the encoder's parameters); feature (MGDA-UB): one encoder backward pass and
    a T x T all-reduce; "loss"/"loss+" add one all-reduce of T losses. The solver runs on the
    T x T Gram matrix in the graph (at most 250 iterations). Weights logged as
    `train_weight_<task>` (those applied to the raw gradients).
    """

    method = "mgda"
    hyperparameters = {"normalization": "none", "space": "shared"}

    def __init__(self, encoder, decoders, tasks, normalization="none", space="shared", **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if normalization not in NORMALIZATIONS:
            raise GreatError(f"unknown MGDA normalization {normalization!r}: choose one of "
                             f"{', '.join(NORMALIZATIONS)}")
        self.normalization = normalization
        self.space = check_space(space)
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def network_gradients(self, step):
        grads = self.gradients_by_task(step, self.space)
        gram = grads.gram()
        losses = self.global_losses(step) if "loss" in self.normalization else tf.ones_like(step.losses)
        normalizers = gradient_normalizers(self.normalization, grads.norms(), tf.cast(losses, gram.dtype))
        weights = min_norm_weights(gram / (normalizers[:, None] * normalizers[None, :])) / normalizers
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.combined_gradients(step, grads, grads.apply_weights(weights))
