"""Batch normalization with exact second-order gradients, fast on one device and synchronized
across replicas.

Every network under a double backprop (the defense's main network, the distillation student)
needs the gradient of a gradient through its BatchNorm layers. Keras 3's default layer gets it
wrong (its variance has a stop-gradient on the mean; docs/design.md#exactness), and its synchronized
layer, though exact, is built from a dozen elementwise ops whose automatic second derivative is
slow: it made a ResNet-18 plain step 30 % slower than the fused kernel, and the GREAT defense step
22 % slower (bench.defense, width 64).

`ExactBatchNorm` computes training mode with hand-written derivatives at both orders:

* forward: on one replica in float32, TensorFlow's fused kernel (oneDNN on CPU); otherwise (several
  replicas, float64) the same statistics computed from cross-replica sums, so that a distributed
  step normalizes exactly like a single-device step;
* first derivative: the fused gradient kernel, or its formula
  `dx = gamma * r * (dy - mean(dy) - x̂ * mean(dy * x̂))`, `r = 1 / sqrt(var + eps)`;
* second derivative: the derivative of that formula, derived by hand (`_second_order`), with every
  mean over all replicas' examples.

Derivatives of third order are not defined (nothing in GREAT needs them). Inference mode (moving
statistics) is Keras' own, which is linear in x and exact at every order.
"""

import keras
import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError


def replica_total(values):
    """`values` summed over the replicas in sync (unchanged on one replica or outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def uses_fused_kernel(x):
    """The fused kernels normalize one replica's batch and have no float64 version."""
    ctx = tf.distribute.get_replica_context()
    return x.dtype == tf.float32 and (ctx is None or ctx.num_replicas_in_sync == 1)


def _sum(t):
    """Per-channel sum over every axis but the last (this replica's examples)."""
    return tf.reduce_sum(t, axis=list(range(t.shape.rank - 1)))


def _local_count(x):
    return tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)


def _as_4d(t):
    """The fused kernels take NHWC; statistics over every axis but the last are unchanged by this."""
    return t if t.shape.rank == 4 else tf.reshape(t, [-1, 1, 1, tf.shape(t)[-1]])


class _Statistics:
    """What the forward pass leaves for the derivatives: the global count, mean, variance, r."""

    def __init__(self, count, mean, variance, epsilon):
        self.count, self.mean, self.variance = count, mean, variance
        self.inv_std = tf.math.rsqrt(variance + epsilon)


def _fused_forward(x, gamma, beta, epsilon):
    y, mean, unbiased_var, *reserve = tf.raw_ops.FusedBatchNormV3(
        x=_as_4d(x), scale=gamma, offset=beta, mean=tf.constant([], x.dtype),
        variance=tf.constant([], x.dtype), epsilon=epsilon, is_training=True)
    count = _local_count(x)
    variance = unbiased_var * (count - 1.0) / tf.maximum(count, 1.0)  # the kernel applies Bessel's correction
    return tf.reshape(y, tf.shape(x)), _Statistics(count, mean, variance, epsilon), reserve


def _fused_gradient(dy, x, scale, reserve, epsilon):
    """The fused gradient kernel: (scale * r * (dy - mean(dy) - x̂ * mean(dy * x̂)), sum(dy * x̂), sum(dy)).

    It is linear in dy and in scale, which `_fused_second_order` uses to evaluate the second
    derivative with three kernel calls instead of a dozen elementwise ops.
    """
    dx, dscale, doffset, *_ = tf.raw_ops.FusedBatchNormGradV3(
        y_backprop=_as_4d(dy), x=_as_4d(x), scale=scale, reserve_space_1=reserve[0],
        reserve_space_2=reserve[1], reserve_space_3=reserve[2], epsilon=epsilon, is_training=True)
    return tf.reshape(dx, tf.shape(x)), dscale, doffset


def _fused_scale_shift(x, scale, offset, stats, epsilon):
    """scale * x̂ + offset, x̂ normalized with the batch statistics already computed."""
    y, *_ = tf.raw_ops.FusedBatchNormV3(
        x=_as_4d(x), scale=scale, offset=offset, mean=stats.mean, variance=stats.variance,
        epsilon=epsilon, is_training=False)
    return tf.reshape(y, tf.shape(x))


def _synchronized_forward(x, gamma, beta, epsilon):
    channels = tf.shape(x)[-1:]
    totals = replica_total(tf.concat([_sum(x), [_local_count(x)]], 0))
    count = totals[-1]
    mean = totals[:-1] / count
    centered = x - tf.reshape(mean, channels)
    variance = replica_total(_sum(tf.square(centered))) / count  # two passes: no E[x^2] - E[x]^2 cancellation
    stats = _Statistics(count, mean, variance, epsilon)
    x_hat = centered * stats.inv_std
    return x_hat * gamma + beta, stats, x_hat


def _second_order(u, p, q, dy, x_hat, gamma, stats, dgamma_local, dbeta_local):
    """Cotangents of (dy, x, gamma) given cotangents (u, p, q) of the first derivative's outputs
    (dx, dgamma, dbeta), for `dx = gamma * r * (dy - A - x̂ * B)`, A = mean(dy), B = mean(dy * x̂).

    With ū = mean(u), C = mean(u * x̂), D = mean(u * dy) (means over all replicas), differentiating
    `sum(u * dx) + p * dgamma + q * dbeta`:
      d/d dy    = gamma * r * (u - ū - x̂ * C) + p * x̂ + q
      d/d gamma = r * sum(u * (dy - A - x̂ * B))                        (this replica's sum)
      d/d x     = r * (h - mean(h) - x̂ * mean(h * x̂)) + gamma * r² * x̂ * (C * B - D + ū * A),
                  h = a * u + b * dy, a = -gamma * r * B, b = p - gamma * r * C.
    `p` is this replica's cotangent of its own dgamma, so mean(h) and mean(h * x̂) need the
    replica totals of p * sum(dy) and p * sum(dy * x̂).
    """
    zeros = tf.zeros_like(gamma)
    u = tf.zeros_like(dy) if u is None else u
    p = zeros if p is None else p
    q = zeros if q is None else q
    n, r = stats.count, stats.inv_std
    sum_u, sum_u_xhat, sum_u_dy = _sum(u), _sum(u * x_hat), _sum(u * dy)
    totals = replica_total(tf.stack([sum_u, sum_u_xhat, sum_u_dy, dbeta_local, dgamma_local,
                                     p * dbeta_local, p * dgamma_local])) / n
    u_bar, C, D, A, B, p_dy, p_dy_xhat = tf.unstack(totals)
    a = -gamma * r * B
    b = p - gamma * r * C
    h_mean = a * u_bar + p_dy - gamma * r * C * A
    h_xhat_mean = a * C + p_dy_xhat - gamma * r * C * B
    d_x = ((r * a) * u + (r * b) * dy - r * h_mean
           + x_hat * (gamma * r * r * (C * B - D + u_bar * A) - r * h_xhat_mean))
    d_dy = (gamma * r) * u + (p - gamma * r * C) * x_hat + (q - gamma * r * u_bar)
    d_gamma = r * (sum_u_dy - A * sum_u - B * sum_u_xhat)
    return d_dy, d_x, d_gamma


def _is_zero(t):
    """True for a cotangent that is None or a known all-zero constant (an unused dgamma or dbeta)."""
    if t is None:
        return True
    value = tf.get_static_value(t)
    return value is not None and not np.any(value)


def _fused_second_order(u, p, q, dy, x, gamma, stats, reserve, dgamma_local, dbeta_local, epsilon):
    """`_second_order` on one replica, with the fused kernels doing the full-size work.

    With e(g) = r * (g - mean(g) - x̂ * mean(g * x̂)) (the fused gradient kernel at scale 1):
      d/d dy = gamma * e(u) + p * x̂ + q,   d/d x = a * e(u) + b * e(dy) + k * x̂,
    a = -gamma * r * B, b = p - gamma * r * C, k = gamma * r² * (C * B - D + ū * A), which is
    `_second_order`'s formula regrouped (h = a * u + b * dy, and e is linear).
    """
    u = tf.zeros_like(dy) if u is None else u
    n, r = stats.count, stats.inv_std
    A, B = dbeta_local / n, dgamma_local / n
    d_dy, sum_u_xhat, sum_u = _fused_gradient(u, x, gamma, reserve, epsilon)
    C, u_bar, D = sum_u_xhat / n, sum_u / n, _sum(u * dy) / n
    p = tf.zeros_like(gamma) if p is None else p
    a, b = -gamma * r * B, p - gamma * r * C
    k = gamma * r * r * (C * B - D + u_bar * A)
    zeros = tf.zeros_like(gamma)
    d_x = tf.add_n([_fused_gradient(u, x, a, reserve, epsilon)[0],
                    _fused_gradient(dy, x, b, reserve, epsilon)[0],
                    _fused_scale_shift(x, k, zeros, stats, epsilon)])
    if not (_is_zero(p) and _is_zero(q)):
        d_dy += _fused_scale_shift(x, p, zeros if q is None else q, stats, epsilon)
    d_gamma = r * n * (D - A * u_bar - B * C)
    return d_dy, d_x, d_gamma


def normalize_for_training(x, gamma, beta, epsilon):
    """(gamma * x̂ + beta, batch mean, batch variance) with batch statistics pooled over replicas.

    Differentiable twice, exactly; the statistics are for the moving averages and carry no gradient.
    """
    fused = uses_fused_kernel(x)
    saved = {}

    @tf.custom_gradient
    def forward(x, gamma, beta):
        if fused:
            y, stats, reserve = _fused_forward(x, gamma, beta, epsilon)
        else:
            y, stats, x_hat = _synchronized_forward(x, gamma, beta, epsilon)
        saved["stats"] = stats

        def first_order(dy):
            @tf.custom_gradient
            def backward(dy, x, gamma):
                if fused:
                    dx, dgamma, dbeta = _fused_gradient(dy, x, gamma, reserve, epsilon)

                    def second_order(u, p, q):
                        return _fused_second_order(u, p, q, dy, x, gamma, stats, reserve, dgamma,
                                                   dbeta, epsilon)
                else:
                    dgamma, dbeta = _sum(dy * x_hat), _sum(dy)
                    A, B = tf.unstack(replica_total(tf.stack([dbeta, dgamma])) / stats.count)
                    dx = (gamma * stats.inv_std) * (dy - A - x_hat * B)

                    def second_order(u, p, q):
                        return _second_order(u, p, q, dy, x_hat, gamma, stats, dgamma, dbeta)

                return (dx, dgamma, dbeta), second_order

            return backward(dy, x, gamma)

        return y, first_order

    y = forward(x, gamma, beta)
    stats = saved["stats"]
    return y, tf.stop_gradient(stats.mean), tf.stop_gradient(stats.variance)


@keras.saving.register_keras_serializable(package="great_tf")
class ExactBatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the last axis, always synchronized across replicas,
    whose training mode has exact second-order gradients (see the module docstring).

    Inference mode, the moving averages and the saved configuration are Keras'; the default
    momentum is 0.9 (see `great_tf.models.blocks`).
    """

    def __init__(self, axis=-1, momentum=0.9, **kwargs):
        kwargs.pop("synchronized", None)  # always synchronized; accepted for Keras configs
        if kwargs.get("renorm"):
            raise GreatError("ExactBatchNorm does not support renorm: use keras.layers.BatchNormalization")
        super().__init__(axis=axis, momentum=momentum, synchronized=True, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        if self.axis % len(input_shape) != len(input_shape) - 1:
            raise GreatError(f"ExactBatchNorm normalizes the last (channels) axis only; got axis={self.axis} "
                             f"for inputs of shape {tuple(input_shape)}: use channels-last data")

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise GreatError("ExactBatchNorm does not support masks: drop the mask or use "
                             "keras.layers.BatchNormalization")
        if not (training and self.trainable):
            return super().call(inputs, training=training)
        x = tf.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))  # as Keras: no float16 statistics
        channels = tf.shape(x)[-1:]
        gamma = tf.cast(self.gamma, x.dtype) if self.scale else tf.ones(channels, x.dtype)
        beta = tf.cast(self.beta, x.dtype) if self.center else tf.zeros(channels, x.dtype)
        y, mean, variance = normalize_for_training(x, gamma, beta, self.epsilon)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            batch = tf.cast(batch, moving.dtype)
            moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def inexact_batch_norms(model):
    """The trainable Keras `BatchNormalization` layers of `model` (nested ones too) whose
    training-mode second derivatives are wrong: those neither `ExactBatchNorm` nor synchronized."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
            and not getattr(layer, "synchronized", False)]


def check_exact_batch_norm(model, role, why):
    """Refuses, in one line, a network under a double backprop (`role`, e.g. "the main network")
    with a Keras BatchNormalization whose second-order gradients are wrong (docs/design.md#exactness)."""
    found = inexact_batch_norms(model)
    if found:
        raise GreatError(
            f"{role} {model.name!r} has keras.layers.BatchNormalization {found[0].name!r}, whose "
            f"second-order gradients are wrong under {why}'s double backprop: use "
            f"great_tf.models.ExactBatchNorm (or great_tf.models.batch_norm()) instead")
