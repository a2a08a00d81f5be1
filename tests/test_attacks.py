"""Attacks: FGSM's formula, the eps-ball and pixel range, targeted attacks, labels, batching."""

import numpy as np
import pytest
import tensorflow as tf

from great_tf import attacks
from great_tf.errors import GreatError
from great_tf.models import resnet18


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return resnet18((8, 8, 3), 5, width=4)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((6, 8, 8, 3)).astype(np.float32)
    x[0, :2] = 0.0  # pixels at the range's ends: the clip must act
    x[1, :2] = 1.0
    return x, np.array([0, 1, 2, 3, 4, 0])


def loss_gradient(model, x, labels):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(x)))
    return tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_is_clipped_signed_gradient_step(model, data, targeted):
    x, y = data
    sign = -1.0 if targeted else 1.0
    expected = np.clip(x + sign * 0.1 * np.sign(loss_gradient(model, x, y)), 0.0, 1.0)
    np.testing.assert_allclose(attacks.fgsm(model, x, 0.1, y=y, targeted=targeted).numpy(), expected, atol=1e-6)


def test_untargeted_attack_without_y_uses_the_prediction(model, data):
    x, _ = data
    predicted = attacks.predicted_labels(model, tf.constant(x)).numpy()
    np.testing.assert_allclose(attacks.fgsm(model, x, 0.05).numpy(),
                               attacks.fgsm(model, x, 0.05, y=predicted).numpy())
    with pytest.raises(GreatError, match="targeted attack needs y"):
        attacks.fgsm(model, x, 0.05, targeted=True)


@pytest.mark.parametrize("attack", ["iterative_fgsm", "pgd", "spsa"])
def test_iterative_attacks_stay_in_the_eps_ball_and_pixel_range(model, data, attack):
    x, y = data
    kwargs = {"restarts": 2} if attack == "pgd" else {"num_samples": 4} if attack == "spsa" else {}
    x_adv = getattr(attacks, attack)(model, x, 0.05, nb_iter=4, y=y, eps_iter=0.03, **kwargs).numpy()
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() > 0.04  # it moved (not a no-op)


def target_probability(model, x, target):
    return tf.gather(tf.nn.softmax(model(tf.constant(x))), target, batch_dims=1).numpy()


@pytest.mark.parametrize("attack", ["fgsm", "iterative_fgsm", "pgd"])
def test_targeted_attacks_raise_the_targets_probability(model, data, attack):
    x, y = data
    target = attacks.random_wrong_labels(y, 5, seed=1).numpy()
    assert np.all(target != y)
    kwargs = {} if attack == "fgsm" else {"nb_iter": 5}
    x_adv = getattr(attacks, attack)(model, x, 0.02, y=target, targeted=True, **kwargs).numpy()
    before, after = target_probability(model, x, target), target_probability(model, x_adv, target)
    assert np.all(after > before), (before, after)


def test_least_likely_labels_are_the_argmin(model, data):
    x, _ = data
    logits = model(tf.constant(x)).numpy()
    np.testing.assert_array_equal(attacks.least_likely_labels(model, tf.constant(x)).numpy(), logits.argmin(1))


def test_spsa_attacks_without_the_models_gradient():
    # A model whose gradient is useless (it points nowhere: the logits go through a stop-gradient)
    # defeats gradient attacks completely, but not the gradient-free SPSA.
    w = tf.constant(np.random.default_rng(1).normal(size=(12, 3)), tf.float32)

    def masked(x):
        return tf.stop_gradient(tf.matmul(tf.reshape(x, [-1, 12]), w) * 10.0)

    x = np.random.default_rng(2).random((20, 2, 2, 3)).astype(np.float32)
    y = attacks.predicted_labels(masked, tf.constant(x)).numpy()
    assert attacks.accuracy(masked, attacks.iterative_fgsm(masked, x, 0.3, y=y).numpy(), y) == 100.0
    x_adv = attacks.spsa(masked, x, 0.3, y=y, nb_iter=10, num_samples=16).numpy()
    assert attacks.accuracy(masked, x_adv, y) < 50.0


def test_batched_equals_one_batch(model, data):
    x, y = data
    whole = attacks.iterative_fgsm(model, x, 0.05, y=y, nb_iter=3).numpy()
    pieces = attacks.batched(attacks.iterative_fgsm, model, x, y, batch_size=4, eps=0.05, nb_iter=3)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_bad_arguments_are_one_line_errors(model, data):
    x, y = data
    with pytest.raises(GreatError, match="eps must be"):
        attacks.fgsm(model, x, -0.1, y=y)
    with pytest.raises(GreatError, match="nb_iter"):
        attacks.iterative_fgsm(model, x, 0.1, nb_iter=0, y=y)
    with pytest.raises(GreatError, match="clip_min"):
        attacks.fgsm(model, x, 0.1, y=y, clip_min=1.0, clip_max=0.0)
