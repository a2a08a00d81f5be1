"""The Square attack: its p and square-size schedules against the authors' table, its start, that
each query can only lower the margin, that it needs no gradient, and batching."""

import math

import numpy as np
import pytest
import tensorflow as tf

from great_tf import attacks
from great_tf.errors import GreatError


def reference_p(it, n_queries, p_init=0.8, rescale=False):
    """The authors' p_selection, written out as in their code (AutoAttack, square.py)."""
    if rescale:
        it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 8
    if 500 < it <= 1000:
        return p_init / 16
    if 1000 < it <= 2000:
        return p_init / 32
    if 2000 < it <= 4000:
        return p_init / 64
    if 4000 < it <= 6000:
        return p_init / 128
    if 6000 < it <= 8000:
        return p_init / 256
    if 8000 < it:
        return p_init / 512
    return p_init


@pytest.mark.parametrize("rescale, n_queries", [(False, 10000), (True, 1000)])
def test_p_and_square_size_schedules_match_the_authors(rescale, n_queries):
    for it in range(n_queries):
        assert attacks.p_schedule(it, n_queries, 0.8, rescale) == reference_p(it, n_queries, 0.8, rescale), it
    sides = attacks.square_sizes(n_queries, 32, 32, 0.8, rescale)
    expected = [min(max(int(round(math.sqrt(reference_p(i, n_queries, 0.8, rescale) * 1024))), 1), 32)
                for i in range(n_queries)]
    np.testing.assert_array_equal(sides, expected)
    assert sides[0] == 29 and sides[-1] == 1


def small_cnn():
    tf.keras.utils.set_random_seed(1)
    return tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.Conv2D(4, 3, activation="tanh"),
                                tf.keras.layers.Flatten(), tf.keras.layers.Dense(5)])


def margins(model, x, y):
    return -attacks.margin_loss(y, model(tf.constant(x))).numpy()


def test_the_start_is_vertical_stripes_on_the_balls_surface():
    model = small_cnn()
    x = np.random.default_rng(0).uniform(0.2, 0.8, (4, 8, 8, 3)).astype(np.float32)
    start = attacks.square(model, x, 0.1, nb_queries=0).numpy()
    delta = start - x
    np.testing.assert_allclose(np.abs(delta), 0.1, atol=1e-6)
    np.testing.assert_array_equal(np.sign(delta), np.sign(delta[:, :1]) * np.ones_like(delta))  # per column
    assert len({tuple(np.sign(d[0]).ravel()) for d in delta}) > 1  # different stripes per example


def test_every_query_can_only_lower_the_margin():
    model = small_cnn()
    x = np.random.default_rng(1).random((12, 8, 8, 3)).astype(np.float32)
    y = attacks.predict_labels(model, x)
    # Example k's random numbers depend only on k, so nb_queries = q continues the run of q - 1.
    trace = np.stack([margins(model, attacks.square(model, x, 0.05, nb_queries=q, y=y).numpy(), y)
                      for q in range(0, 41, 8)])
    running = trace[:, trace[0] > 0]  # examples correct at the start
    assert np.all(np.diff(running, axis=0) <= 1e-6)
    assert np.all(running[-1] < running[0])  # every one of them was improved
    x_adv = attacks.square(model, x, 0.05, nb_queries=40, y=y).numpy()
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-6 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_square_fools_a_model_without_a_gradient():
    model = small_cnn()

    def masked(v):
        return tf.stop_gradient(model(v))

    x = np.random.default_rng(2).random((16, 8, 8, 3)).astype(np.float32)
    y = attacks.predict_labels(masked, x)
    assert attacks.accuracy(masked, attacks.iterative_fgsm(masked, x, 0.1, y=y).numpy(), y) == 100.0
    assert attacks.accuracy(masked, attacks.square(masked, x, 0.1, nb_queries=200, y=y).numpy(), y) < 50.0


def test_square_batched_equals_one_batch():
    model = small_cnn()
    x = np.random.default_rng(3).random((10, 8, 8, 3)).astype(np.float32)
    whole = attacks.square(model, x, 0.05, nb_queries=150).numpy()  # two chunks of iterations
    pieces = attacks.batched(attacks.square, model, x, batch_size=4, eps=0.05, nb_queries=150)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_square_needs_images():
    w = tf.constant(np.ones((12, 3)), tf.float32)
    with pytest.raises(GreatError, match="square needs images"):
        attacks.square(lambda v: tf.matmul(v, w), np.zeros((2, 12), np.float32), 0.1)
