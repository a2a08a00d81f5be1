"""Input gradients: the masked gradient against its formula, and per-example independence."""

import numpy as np
import pytest
import tensorflow as tf

from great_tf.gradients import input_gradients, masked_input_gradients, saliency_maps
from great_tf.models import resnet18


def linear_logits(w, b):
    return lambda x, training=False: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w) + b


def test_masked_gradient_matches_formula_on_linear_model():
    # a = W^T vec(x) + b, so da_y/dx = W[:, y] and g = (p_y - 1) W[:, y] exactly.
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(12, 5)), tf.float64)
    b = tf.constant(rng.normal(size=(5,)), tf.float64)
    x = tf.constant(rng.normal(size=(6, 2, 2, 3)), tf.float64)
    y = np.array([0, 4, 2, 2, 1, 3])
    g, logits = masked_input_gradients(linear_logits(w, b), x, y)
    p = tf.nn.softmax(logits).numpy()
    expected = np.stack([(p[i, y[i]] - 1.0) * w.numpy()[:, y[i]] for i in range(6)]).reshape(x.shape)
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_masked_gradient_matches_per_example_jacobian_on_convnet():
    model = resnet18((8, 8, 3), 4, width=4)
    x = tf.random.stateless_uniform([4, 8, 8, 3], [1, 2])
    y = np.array([0, 1, 3, 3])
    g, _ = masked_input_gradients(model, x, y)
    for i in range(4):  # one example at a time: (p_y - 1) * da_y/dx from its own tape
        xi = x[i:i + 1]
        with tf.GradientTape() as tape:
            tape.watch(xi)
            a = model(xi)
            a_y = a[0, y[i]]
        p_y = tf.nn.softmax(a)[0, y[i]]
        expected = (p_y - 1.0) * tape.gradient(a_y, xi)
        np.testing.assert_allclose(g[i:i + 1].numpy(), expected.numpy(), rtol=1e-4, atol=1e-7)


def test_masked_gradient_differs_from_plain_gradient():
    # The plain gradient carries the negative classes' terms p_j * da_j/dx; the mask removes them.
    model = resnet18((8, 8, 3), 4, width=4)
    x = tf.random.stateless_uniform([2, 8, 8, 3], [3, 4])
    y = np.array([1, 2])
    plain, _ = input_gradients(model, x, y)
    masked, _ = masked_input_gradients(model, x, y)
    assert not np.allclose(plain.numpy(), masked.numpy(), atol=1e-6)


@pytest.mark.parametrize("fn", [input_gradients, masked_input_gradients])
def test_input_gradients_do_not_depend_on_batch_size(fn):
    # Summed losses: example i's gradient is the same in a batch of 4 and in a batch of 8.
    model = resnet18((16, 16, 3), 10, width=4)
    x = tf.random.stateless_uniform([8, 16, 16, 3], [5, 6])
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    small, _ = fn(model, x[:4], y[:4], training=False)
    large, _ = fn(model, x, y, training=False)
    np.testing.assert_allclose(small.numpy(), large[:4].numpy(), rtol=1e-5, atol=1e-8)
    # A mean loss would have made them differ by the factor 2.
    assert np.abs(small.numpy()).max() > 0


def test_saliency_maps_are_channel_max_of_gradient_magnitude():
    model = resnet18((8, 8, 3), 3, width=4)
    x = tf.random.stateless_uniform([2, 8, 8, 3], [7, 8])
    y = np.array([0, 2])
    grads, _ = input_gradients(model, x, y)
    np.testing.assert_allclose(saliency_maps(model, x, y).numpy(), np.abs(grads.numpy()).max(-1),
                               rtol=1e-5, atol=1e-9)
