import keras
import numpy as np
import tensorflow as tf

from great_tf.layers import GAL, GradientReversal, reverse_gradient


def gal_built(shape=(2, 3), gamma=None):
    gal = GAL()
    gal.build((None,) + shape)
    if gamma is not None:
        gal.gamma.assign(gamma)
    return gal


def test_gal_forward_is_identity():
    x = tf.random.normal([4, 2, 3])
    gal = gal_built(gamma=np.full((2, 3), 3.0, np.float32))
    np.testing.assert_array_equal(gal(x).numpy(), x.numpy())


def test_gal_scales_the_incoming_gradient_by_gamma():
    x = tf.random.normal([4, 2, 3])
    upstream = tf.random.normal([4, 2, 3])
    gamma = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3)).astype(np.float32)
    gal = gal_built(gamma=gamma)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(gal(x) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), upstream.numpy() * gamma, rtol=1e-6)


def test_downstream_losses_give_gamma_no_gradient():
    gal = gal_built()
    x = tf.random.normal([4, 2, 3])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(gal(x)))
    assert tape.gradient(loss, gal.gamma) is None


def test_gamma_stays_positive_under_an_optimizer_push_below_zero():
    gal = gal_built()
    keras.optimizers.SGD(10.0).apply([tf.ones((2, 3))], [gal.gamma])
    assert np.all(gal.gamma.numpy() == np.float32(gal.min_value))


def test_model_with_gal_survives_keras_save_and_load(tmp_path):
    inputs = keras.Input((5,))
    feature = keras.layers.Dense(3)(inputs)
    outputs = keras.layers.Dense(2)(GAL(min_value=0.01, name="gal")(feature))
    model = keras.Model(inputs, outputs)
    without_gal = keras.Model(inputs, model.layers[-1](feature))
    gamma = np.array([0.5, 2.0, 3.0], np.float32)
    model.get_layer("gal").gamma.assign(gamma)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(model(x).numpy(), without_gal(x).numpy(), rtol=1e-6)
    assert loaded.get_layer("gal").min_value == 0.01
    np.testing.assert_array_equal(loaded.get_layer("gal").gamma.numpy(), gamma)


def test_gradient_reversal_negates_and_scales_first_and_second_order(float64):
    x = tf.constant([0.3, -1.2, 2.0], tf.float64)
    layer = GradientReversal(scale=0.7)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(layer(x) ** 3)
        first = inner.gradient(y, x)
        z = tf.reduce_sum(first)
    np.testing.assert_allclose(first.numpy(), -0.7 * 3 * x.numpy() ** 2)
    # The reversal's Jacobian -0.7*I enters twice: once per differentiation through it.
    np.testing.assert_allclose(outer.gradient(z, x).numpy(), 0.7**2 * 6 * x.numpy())
    assert GradientReversal.from_config(layer.get_config()).scale == 0.7


def test_reverse_gradient_accepts_a_tensor_scale():
    x = tf.ones([2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(reverse_gradient(x, tf.constant(2.5)))
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [-2.5, -2.5])
