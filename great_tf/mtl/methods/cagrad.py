"""CAGrad, conflict-averse gradient descent (Liu et al., NeurIPS 2021; docs/design.md#mtl-methods)."""

import keras
import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel
from great_tf.mtl.gradients import check_space

RESCALES = (0, 1, 2)


def dual_weights(gram, c):
    """The w on the simplex minimising the CAGrad dual in terms of the Gram matrix G (g_0 the
    average gradient): F(w) = w^T G 1/T + c |g_0| sqrt(w^T G w).

    SciPy's SLSQP as the reference code (LibMTL and the authors'), with the exact Jacobian and a
    tight tolerance; G is first divided by its mean diagonal, which multiplies F by a constant
    and leaves the minimiser unchanged, so the tolerance means the same at any gradient scale.
    NumPy in, NumPy out: called through `tf.numpy_function` on the global Gram matrix.
    """
    from scipy.optimize import minimize

    gram = np.asarray(gram, np.float64)
    num_tasks = len(gram)
    scale = np.trace(gram) / num_tasks
    if not np.isfinite(scale) or scale <= 0:
        return np.full(num_tasks, 1.0 / num_tasks, gram.dtype)
    gram = gram / scale
    mean = np.full(num_tasks, 1.0 / num_tasks)
    radius = c * np.sqrt(max(mean @ gram @ mean, 0.0))  # c |g_0|

    def objective(w):
        return w @ gram @ mean + radius * np.sqrt(w @ gram @ w + 1e-12)

    def jacobian(w):
        return gram @ mean + radius * (gram @ w) / np.sqrt(w @ gram @ w + 1e-12)

    result = minimize(objective, mean, jac=jacobian, method="SLSQP", bounds=[(0.0, 1.0)] * num_tasks,
                      constraints=({"type": "eq", "fun": lambda w: 1.0 - np.sum(w),
                                    "jac": lambda w: -np.ones_like(w)},),
                      options={"ftol": 1e-14, "maxiter": 500})
    return np.asarray(result.x, np.float64)


def cagrad_weights(gram, c, rescale):
    """The weights of the CAGrad update d = g_0 + (c |g_0| / |g_w|) g_w, g_w = sum_i w_i g_i,
    divided by 1 + c^2 (rescale=1), 1 + c (2) or 1 (0): d = sum_i weights_i g_i."""
    num_tasks = gram.shape[0]
    w = tf.numpy_function(lambda g: dual_weights(g, c), [tf.cast(gram, tf.float64)], tf.float64,
                          stateful=False)
    w = tf.cast(tf.reshape(w, [num_tasks]), gram.dtype)
    mean = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, gram.dtype))
    mean_norm = tf.sqrt(tf.maximum(tf.tensordot(mean, tf.linalg.matvec(gram, mean), 1), 0.0))
    w_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(gram, w), 1), 0.0))
    weights = mean + tf.math.divide_no_nan(c * mean_norm, w_norm) * w
    return weights / {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]


class CAGradMTL(MultiTaskModel):
    """Conflict-averse gradient descent (Liu, Liu, Jin, Stone, Liu 2021): the shared update d
    maximises the worst task's improvement min_i g_i . d within the ball |d - g_0| <= c |g_0|
    around the average gradient g_0 = sum_i g_i / T (the paper's problem, Section 3). Its dual
    over the simplex, min_w g_w . g_0 + c |g_0| |g_w|, gives d = g_0 + (c |g_0| / |g_w|) g_w,
    divided by 1 + c^2 (`rescale=1`, the reference code's default and LibMTL's), 1 + c (2) or
    not (0). Decoders get their own task gradients (raw losses), as in the reference code and
    LibMTL.

    Defaults: c = 0.4 (the paper's multi-task supervised value, NYUv2 and Cityscapes),
    `rescale=1`, `space="shared"`; `space="feature"` runs the same update on the gradients at the
    shared feature (which LibMTL does not offer).

    The dual is solved by SciPy (SLSQP, as the reference) in `tf.numpy_function` on the global
    Gram matrix, so every replica computes the same weights; the host call rules out XLA
    (`supports_jit = False`). Cost per step, shared: T backward passes from the feature to the
    encoder, one T x P all-reduce (P the encoder's parameters) and a T-variable solve on the
    host; feature: one encoder backward pass and a T x T all-reduce. Weights logged as
    `train_weight_<task>` (d = sum_i w_i g_i).
    """

    method = "cagrad"
    hyperparameters = {"c": 0.4, "rescale": 1, "space": "shared"}

    def __init__(self, encoder, decoders, tasks, c=0.4, rescale=1, space="shared", **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if c < 0:
            raise GreatError(f"CAGrad's c must be >= 0 (0 is the average gradient), got {c}")
        if rescale not in RESCALES:
            raise GreatError(f"CAGrad's rescale must be 0, 1 (divide by 1 + c^2) or 2 "
                             f"(divide by 1 + c), got {rescale}")
        self.c = float(c)
        self.rescale = int(rescale)
        self.space = check_space(space)
        self.supports_jit = False  # the SciPy solve runs on the host
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def network_gradients(self, step):
        grads = self.gradients_by_task(step, self.space)
        weights = cagrad_weights(grads.gram(), self.c, self.rescale)
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.combined_gradients(step, grads, grads.apply_weights(weights))
