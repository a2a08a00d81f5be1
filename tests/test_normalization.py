"""ExactBatchNorm: its hand-written first and second derivatives against float64 central
differences, the fused kernels against the synchronized formulas, two replicas against one device,
moving statistics, saving, and clear errors.

Every check goes through `second_order_probe`: an inner tape takes the gradient of a nonlinear loss
of the layer's output with respect to x, gamma AND beta, and S = <u, dx> + <p, dgamma> + <q, dbeta>
is differentiated again, so every input of the second derivative (dy, x, gamma) and every cotangent
(u, p, q) is exercised.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.models import normalization
from great_tf.models.normalization import ExactBatchNorm, normalize_for_training

EPS = 1e-3


def probe_inputs(dtype, shape=(6, 3, 3, 4), seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    x = rng.normal(1.0, 2.0, size=shape)
    gamma, beta = rng.normal(1.0, 0.5, channels), rng.normal(size=channels)
    w, u = rng.normal(size=shape), rng.normal(size=shape)
    p, q = rng.normal(size=channels), rng.normal(size=channels)
    return [tf.constant(a, dtype) for a in (x, gamma, beta, w, u, p, q)]


def second_order_probe(x, gamma, beta, w, u, p, q):
    """(S, dS/d(x, gamma, beta)) with S = <u, dL/dx> + <p, dL/dgamma> + <q, dL/dbeta>,
    L = sum(w * sin(y)), y the layer's training-mode output."""
    with tf.GradientTape() as outer:
        outer.watch([x, gamma, beta])
        with tf.GradientTape() as inner:
            inner.watch([x, gamma, beta])
            y, _, _ = normalize_for_training(x, gamma, beta, EPS)
            loss = tf.reduce_sum(w * tf.sin(y))
        dx, dgamma, dbeta = inner.gradient(loss, [x, gamma, beta])
        s = tf.reduce_sum(u * dx) + tf.reduce_sum(p * dgamma) + tf.reduce_sum(q * dbeta)
    return s, outer.gradient(s, [x, gamma, beta])


def first_order(x, gamma, beta, w):
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        y, _, _ = normalize_for_training(x, gamma, beta, EPS)
        loss = tf.reduce_sum(w * tf.sin(y))
    return loss, tape.gradient(loss, [x, gamma, beta])


def reference_output(x, gamma, beta):
    """Batch normalization written out in NumPy: biased variance over every axis but the last."""
    axes = tuple(range(x.ndim - 1))
    return gamma * (x - x.mean(axes)) / np.sqrt(x.var(axes) + EPS) + beta


def directional_difference(f, args, direction, h=1e-5):
    plus = [a + h * d for a, d in zip(args, direction)]
    minus = [a - h * d for a, d in zip(args, direction)]
    return (float(f(*plus)) - float(f(*minus))) / (2 * h)


@pytest.mark.parametrize("shape", [(6, 3, 3, 4), (7, 5)])
def test_output_and_both_derivatives_match_float64_finite_differences(shape):
    x, gamma, beta, w, u, p, q = probe_inputs(tf.float64, shape)
    y, mean, variance = normalize_for_training(x, gamma, beta, EPS)
    np.testing.assert_allclose(y.numpy(), reference_output(x.numpy(), gamma.numpy(), beta.numpy()),
                               rtol=1e-12)
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(variance.numpy(), x.numpy().var(axes), rtol=1e-12)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(axes), rtol=1e-12)

    rng = np.random.default_rng(1)
    direction = [tf.constant(rng.normal(size=t.shape)) for t in (x, gamma, beta)]
    _, grads = first_order(x, gamma, beta, w)
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    numeric = directional_difference(lambda *a: first_order(*a, w)[0], [x, gamma, beta], direction)
    assert abs(analytic - numeric) < 1e-8 * max(1.0, abs(numeric))

    _, grads = second_order_probe(x, gamma, beta, w, u, p, q)
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    numeric = directional_difference(lambda *a: second_order_probe(*a, w, u, p, q)[0],
                                     [x, gamma, beta], direction)
    assert abs(analytic - numeric) < 1e-8 * max(1.0, abs(numeric))


def test_the_second_derivative_is_not_the_default_layers(float64):
    """The check above can fail: Keras' default layer misses second-order terms (docs/design.md#exactness)."""
    x, gamma, beta, w, u, p, q = probe_inputs(tf.float64)
    layer = keras.layers.BatchNormalization(epsilon=EPS)
    layer.build(x.shape)
    layer.gamma.assign(gamma), layer.beta.assign(beta)

    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(w * tf.sin(layer(x, training=True)))
        s = tf.reduce_sum(u * inner.gradient(loss, x))
    keras_grad = outer.gradient(s, x)
    _, (exact_grad, _, _) = second_order_probe(x, gamma, beta, w, u, p * 0, q * 0)
    assert float(tf.reduce_max(tf.abs(keras_grad - exact_grad))) > 1e-3


@pytest.mark.parametrize("shape, unused_dgamma", [((6, 4, 4, 8), False), ((10, 5), False),
                                                  ((6, 4, 4, 8), True)])
def test_fused_kernels_agree_with_the_synchronized_formulas(shape, unused_dgamma, monkeypatch):
    """unused_dgamma: p = q = 0, as in every GREAT step, where the kernels skip p * x̂ + q."""
    args = probe_inputs(tf.float32, shape, seed=2)
    if unused_dgamma:
        args[5:] = [tf.zeros_like(args[5]), tf.zeros_like(args[6])]
    assert normalization.uses_fused_kernel(args[0])
    fused = normalize_for_training(*args[:3], EPS), *second_order_probe(*args)
    monkeypatch.setattr(normalization, "uses_fused_kernel", lambda x: False)
    formulas = normalize_for_training(*args[:3], EPS), *second_order_probe(*args)
    for a, b in zip(tf.nest.flatten(fused), tf.nest.flatten(formulas)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=2e-4 * float(tf.reduce_max(tf.abs(b))))


def test_two_replicas_give_the_single_device_second_derivatives(mirrored, float64):
    """Each replica normalizes half the batch with pooled statistics; its probe S is its share of
    the single-device S (its u, its dgamma and dbeta), so the x gradients concatenate and the
    gamma and beta gradients sum to the single-device ones."""
    strategy = mirrored
    x, gamma, beta, w, u, p, q = probe_inputs(tf.float64, (6, 3, 3, 4), seed=3)
    _, single = second_order_probe(x, gamma, beta, w, u, p, q)

    def replica_probe():
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        rows = slice(3 * i, 3 * i + 3)
        return second_order_probe(x[rows], gamma, beta, w[rows], u[rows], p, q)[1]

    # Compiled: eager replica threads may issue their all-reduces out of order.
    per_replica = strategy.experimental_local_results(tf.function(lambda: strategy.run(replica_probe))())
    dx = tf.concat([r[0] for r in per_replica], 0)
    dgamma, dbeta = (sum(r[k] for r in per_replica) for k in (1, 2))
    for a, b in zip((dx, dgamma, dbeta), single):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_updates_moving_statistics_with_the_biased_batch_variance(dtype):
    x = np.random.default_rng(4).normal(2.0, 3.0, size=(8, 2, 2, 3)).astype(dtype)
    layer = ExactBatchNorm(momentum=0.9, dtype=dtype)
    y = layer(x, training=True)
    np.testing.assert_allclose(y.numpy(), reference_output(x, 1.0, 0.0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * x.var((0, 1, 2)), rtol=1e-5)
    inference = layer(x, training=False).numpy()
    expected = (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
    np.testing.assert_allclose(inference, expected, rtol=1e-4, atol=1e-5)


def test_layer_survives_keras_save_and_load(tmp_path):
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, ExactBatchNorm(name="bn")(keras.layers.Conv2D(3, 3)(inputs)))
    x = np.random.default_rng(5).normal(size=(4, 4, 4, 2)).astype("float32")
    model(x, training=True)  # moves the moving statistics away from their initial values
    model.save(tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras")
    assert isinstance(loaded.get_layer("bn"), ExactBatchNorm)
    assert loaded.get_layer("bn").momentum == pytest.approx(0.9)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_unsupported_configurations_fail_in_one_line():
    with pytest.raises(GreatError, match="last .channels. axis"):
        ExactBatchNorm(axis=1).build((2, 3, 4, 4))
    with pytest.raises(GreatError, match="renorm"):
        ExactBatchNorm(renorm=True)
    with pytest.raises(GreatError, match="masks"):
        ExactBatchNorm()(np.zeros((2, 3), "float32"), training=True, mask=np.ones((2,), bool))
