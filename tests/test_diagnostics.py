"""great_tf.diagnostics: the BatchNorm-statistics gap and the logit scale, on a network whose
moving statistics are right and on the same network with them broken."""

import keras
import numpy as np

from great_tf.diagnostics import check_model


def network():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization(momentum=0.0)(keras.layers.Dense(8)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(h)))


def test_gap_is_zero_with_matching_statistics_and_large_with_broken_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    model = network()
    y = np.asarray(model(x, training=True)).argmax(1)  # labels the batch-statistics model gets right
    model(x, training=True)  # momentum 0: the moving statistics become those of the whole set
    good = check_model(model, x, y, batch_size=512)
    assert good.batch_stats_accuracy == 100.0
    assert abs(good.inference_accuracy - 100.0) < 1e-9
    bn = model.layers[2]
    bn.moving_mean.assign(bn.moving_mean + 5.0)
    broken_mean = bn.moving_mean.numpy().copy()
    bad = check_model(model, x, y, batch_size=512)
    assert bad.batch_stats_accuracy == 100.0 and bad.inference_accuracy < 80.0
    assert "do not describe" in bad.lines()[0]
    np.testing.assert_array_equal(bn.moving_mean.numpy(), broken_mean)  # put back after the check


def test_logit_scale_and_spread():
    model = network()
    x = np.random.default_rng(1).normal(size=(64, 4)).astype("float32")
    logits = np.asarray(model(x, training=False))
    result = check_model(model, x, np.zeros(64, int))
    np.testing.assert_allclose(result.mean_largest_logit, np.abs(logits).max(1).mean(), rtol=1e-6)
    np.testing.assert_allclose(result.mean_logit_spread, logits.std(1).mean(), rtol=1e-6)
