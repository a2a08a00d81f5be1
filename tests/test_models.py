import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf.models import (ExactBatchNorm, classification_decoder, cnn5, dense_decoder, resnet11,
                             resnet18, resnet18_encoder, task_classifier)


def test_resnet18_shapes_and_width():
    model = resnet18((32, 32, 3), 10, width=4)
    assert model.output.shape[1:] == (10,)
    encoder = resnet18_encoder((32, 32, 1), width=4)
    assert encoder.output.shape[1:] == (4, 4, 32)
    convs = [l for l in encoder.layers if isinstance(l, keras.layers.Conv2D) and l.kernel.shape[0] == 3]
    assert len(convs) == 17  # stem + 16 block convolutions


def test_decoders_restore_the_input_resolution():
    feature = (4, 4, 32)
    assert dense_decoder(feature, 3, width=4).output.shape[1:] == (32, 32, 3)
    assert classification_decoder(feature, 10).output.shape[1:] == (10,)


def test_task_classifier_reads_the_shared_feature_and_halves_widths():
    model = task_classifier((4, 4, 32), 4, width=4)
    assert model.output.shape[1:] == (4,)
    block_outputs = [l.output.shape[-1] for l in model.layers if l.name.endswith("_add")]
    assert block_outputs == [16, 8, 4, 2]
    leaky = [l for l in model.layers if isinstance(l, keras.layers.LeakyReLU)]
    assert leaky and all(abs(l.negative_slope - 0.2) < 1e-9 for l in leaky)


def test_every_batch_norm_is_exact_and_synchronized():
    models = [resnet18((8, 8, 3), 2, width=4), resnet11((8, 8, 3), 2, (4, 4, 4, 4)),
              dense_decoder((1, 1, 8), 1, width=4), cnn5((8, 8, 3), 2)]
    for model in models:
        bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
        assert bns and all(isinstance(l, ExactBatchNorm) and l.synchronized for l in bns)
        assert all(abs(l.momentum - 0.9) < 1e-9 for l in bns)  # PyTorch's default, not Keras' 0.99


def gradient_penalty_and_its_gradient(model, x, y):
    """P = ||dL/dx||^2 (a double backprop) and dP/dtheta."""
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            logits = model(x, training=True)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        penalty = tf.reduce_sum(tf.square(inner.gradient(loss, x)))
    return penalty, outer.gradient(penalty, model.trainable_variables)


def finite_difference_error(model, x, y, eps=1e-6):
    """Relative error of autodiff dP/dtheta against central differences, over all parameters."""
    _, grads = gradient_penalty_and_its_gradient(model, x, y)
    rng = np.random.default_rng(0)
    direction = [rng.normal(size=v.shape) for v in model.trainable_variables]
    analytic = sum(np.sum(g.numpy() * d) for g, d in zip(grads, direction))
    originals = [v.numpy() for v in model.trainable_variables]

    def penalty_at(step):
        for v, o, d in zip(model.trainable_variables, originals, direction):
            v.assign(o + step * d)
        return float(gradient_penalty_and_its_gradient(model, x, y)[0])

    numeric = (penalty_at(eps) - penalty_at(-eps)) / (2 * eps)
    penalty_at(0.0)
    return abs(analytic - numeric) / abs(numeric)


def conv_bn_net(normalization):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    x = normalization()(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    return tf.constant(rng.normal(size=(5, 6, 6, 2))), tf.constant([0, 1, 2, 1, 0])


@pytest.mark.parametrize("normalization", [ExactBatchNorm, lambda: keras.layers.BatchNormalization(synchronized=True)])
def test_exact_and_synchronized_batch_norm_have_exact_second_order_gradients(normalization, float64, batch):
    keras.utils.set_random_seed(1)
    assert finite_difference_error(conv_bn_net(normalization), *batch) < 1e-7


def test_default_batch_norm_second_order_gradients_are_wrong(float64, batch):
    """Why the library never uses the default layer (docs/design.md#exactness)."""
    keras.utils.set_random_seed(1)
    assert finite_difference_error(conv_bn_net(keras.layers.BatchNormalization), *batch) > 1e-6


def test_library_resnet_is_exact_under_double_backprop(float64):
    keras.utils.set_random_seed(2)
    model = resnet18((8, 8, 2), 3, width=2)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(3, 8, 8, 2)))
    # eps small enough that no ReLU kink lies within +-eps of the point.
    assert finite_difference_error(model, x, tf.constant([0, 2, 1]), eps=1e-7) < 1e-6
