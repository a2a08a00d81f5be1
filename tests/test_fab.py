"""FAB-T: its projection step against a linear program, its minimal perturbations on linear
classifiers whose answer is known in closed form, the target order, the eps ball, batching and
its errors."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linprog

from great_tf import attacks
from great_tf.attacks.fab import linf_boundary_projection
from great_tf.errors import GreatError


def lp_projection(t, w, b, lo, hi):
    """min ||d||_inf s.t. w . (t + d) + b = 0, lo <= t + d <= hi, as a linear program in (d, delta):
    (the optimal delta, or None if the box does not reach the hyperplane)."""
    n = len(t)
    cost = np.r_[np.zeros(n), 1.0]
    ball = np.vstack([np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)]])  # |d_i| <= delta
    result = linprog(cost, A_ub=ball, b_ub=np.zeros(2 * n), A_eq=np.r_[w, 0.0][None], b_eq=[-b - w @ t],
                     bounds=[(l - ti, h - ti) for ti, l, h in zip(t, lo, hi)] + [(0, None)], method="highs")
    assert result.status in (0, 2), result.message  # 2: infeasible
    return result.fun if result.status == 0 else None


def test_the_projection_step_is_the_linear_programs_optimum():
    rng = np.random.default_rng(0)
    batch, n = 40, 9
    t = rng.random((batch, n))
    lo = np.minimum(t, rng.random((batch, n)) * 0.3)  # a box around t per example
    hi = np.maximum(t, 1.0 - rng.random((batch, n)) * 0.3)
    w = rng.normal(size=(batch, n)) * (rng.random((batch, n)) < 0.8)  # some coordinates without weight
    b = rng.normal(size=batch) * 1.5 - np.sum(w * t, 1)  # residuals large enough that some are out of reach
    d = linf_boundary_projection(*(tf.constant(v, tf.float32) for v in (t, w, b, lo, hi))).numpy()
    feasible = 0
    for k in range(batch):
        optimum = lp_projection(t[k], w[k], b[k], lo[k], hi[k])
        assert np.all(t[k] + d[k] >= lo[k] - 1e-6) and np.all(t[k] + d[k] <= hi[k] + 1e-6), k
        if optimum is None:
            # Out of reach: the box's corner closest to the hyperplane.
            side = -np.sign(w[k] @ t[k] + b[k]) * np.sign(w[k])
            corner = np.where(side > 0, hi[k], np.where(side < 0, lo[k], t[k]))
            np.testing.assert_allclose(t[k] + d[k], corner, atol=1e-6)
        else:
            feasible += 1
            assert w[k] @ (t[k] + d[k]) + b[k] == pytest.approx(0.0, abs=1e-5), k
            assert np.abs(d[k]).max() == pytest.approx(optimum, rel=1e-5, abs=1e-7), k
    assert 10 < feasible < batch  # both cases were exercised


def test_the_projection_of_a_point_on_the_hyperplane_is_no_step():
    w = tf.constant([[1.0, -2.0, 0.0]])
    t = tf.constant([[0.5, 0.25, 0.3]])
    d = linf_boundary_projection(t, w, -tf.reduce_sum(w * t, 1), 0.0, 1.0)
    np.testing.assert_array_equal(d.numpy(), np.zeros((1, 3)))


def linear_model(weights, biases):
    """Logits [W x + b] of a linear classifier on images flattened; numpy weights [classes, n]."""
    w, b = tf.constant(weights.T, tf.float32), tf.constant(biases, tf.float32)
    return lambda x: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w) + b


def linf_distances(x_adv, x):
    return np.abs(np.asarray(x_adv) - x).reshape(len(x), -1).max(1)


@pytest.fixture(scope="module")
def binary():
    """Logits [0, w.x + b] on 3x4 'images' near the middle of the pixel range, so the box never
    binds: the least L-inf perturbation that flips the class is |w.x + b| / ||w||_1."""
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=12), 0.3
    model = linear_model(np.stack([np.zeros(12), w]), np.array([0.0, b]))
    x = (0.4 + 0.2 * rng.random((8, 3, 4))).astype(np.float32)
    score = x.reshape(8, -1) @ w + b
    return model, x, (score > 0).astype(np.int32), np.abs(score) / np.abs(w).sum()


def test_fab_finds_the_least_perturbation_of_a_linear_classifier(binary):
    model, x, y, distance = binary
    found = linf_distances(attacks.fab(model, x, 1.0, y=y, nb_targets=1, nb_iter=20), x)
    assert np.all(found >= distance * (1 - 1e-5))  # nothing closer exists
    np.testing.assert_allclose(found, distance, rtol=0.01)  # FAB gets within 1 % of it


def test_fab_succeeds_exactly_when_the_eps_ball_reaches_the_boundary(binary):
    model, x, y, distance = binary
    eps = float(np.median(distance))
    x_adv = attacks.fab(model, x, eps, y=y, nb_targets=1, nb_iter=20).numpy()
    broken = ~attacks.correct(model, x_adv, y)
    # 1 % above the least perturbation is enough (previous test), the least one itself never is.
    assert np.array_equal(broken[distance * 1.01 <= eps], np.ones(np.sum(distance * 1.01 <= eps), bool))
    assert not broken[distance > eps].any()
    assert 0 < broken.sum() < len(x)
    assert np.all(linf_distances(x_adv, x) <= eps + 1e-6)
    np.testing.assert_array_equal(x_adv[~broken], x[~broken])  # a failure returns x itself


def test_fab_t_attacks_the_most_likely_other_classes_in_turn():
    """Class 1 is the second most likely but far (small weights), class 2 the third but near, and
    each depends on its own half of the input: with one target FAB-T finds the far boundary; with
    an eps between the two distances only the second target breaks the example."""
    rng = np.random.default_rng(2)
    u, v = np.r_[rng.normal(size=6) * 0.1, np.zeros(6)], np.r_[np.zeros(6), rng.normal(size=6)]
    x = (0.4 + 0.2 * rng.random((1, 12))).astype(np.float32)
    biases = np.array([0.0, -(x[0] @ u) - 0.2, -(x[0] @ v) - 0.4])  # margins 0.2 and 0.4 to class 0
    model, y = linear_model(np.stack([np.zeros(12), u, v]), biases), np.array([0])
    far, near = 0.2 / np.abs(u).sum(), 0.4 / np.abs(v).sum()
    assert near * 1.05 < far and np.argsort(-model(x).numpy()[0]).tolist() == [0, 1, 2]
    np.testing.assert_allclose(linf_distances(attacks.fab(model, x, 1.0, y=y, nb_targets=1), x), far,
                               rtol=0.01)
    between = float(np.sqrt(near * 1.01 * far))
    assert attacks.correct(model, attacks.fab(model, x, between, y=y, nb_targets=1).numpy(), y)[0]
    x_adv = attacks.fab(model, x, between, y=y, nb_targets=2).numpy()
    assert not attacks.correct(model, x_adv, y)[0]
    np.testing.assert_allclose(linf_distances(x_adv, x), near, rtol=0.01)


@pytest.fixture(scope="module")
def network():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4, 4, 2)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(16, activation="tanh"), tf.keras.layers.Dense(5)])
    x = np.random.default_rng(3).random((12, 4, 4, 2)).astype(np.float32)
    return model, x, attacks.predict_labels(model, x)


def test_fab_on_a_network_stays_in_the_ball_and_the_box_and_breaks_some(network):
    model, x, y = network
    x_adv = attacks.fab(model, x, 0.15, y=y, nb_iter=10, nb_targets=3, restarts=2).numpy()
    assert np.all(linf_distances(x_adv, x) <= 0.15 + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    broken = ~attacks.correct(model, x_adv, y)
    assert broken.any()
    np.testing.assert_array_equal(x_adv[~broken], x[~broken])


def test_fab_batched_equals_one_batch(network):
    model, x, y = network
    whole = attacks.fab(model, x, 0.15, y=y, nb_iter=5, nb_targets=2, restarts=2).numpy()
    pieces = attacks.batched(attacks.fab, model, x, y, batch_size=5, eps=0.15, nb_iter=5, nb_targets=2,
                             restarts=2)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


@pytest.mark.parametrize("arguments, message", [
    ({"nb_targets": 5}, "nb_targets 5 is more than the 4 other classes"),
    ({"beta": 1.0}, "beta must be below 1"),
    ({"eta": 0.0}, "eta must be positive"),
    ({"nb_iter": 0}, "nb_iter must be a whole number >= 1"),
    ({"eps": -0.1}, "eps must be >= 0"),
])
def test_fab_errors_are_one_line(network, arguments, message):
    model, x, y = network
    kwargs = {"eps": 0.1, "nb_iter": 2, **arguments}
    with pytest.raises(GreatError, match=message):
        attacks.fab(model, x[:2], y=y[:2], **kwargs)


def test_fab_on_float16_logits_finds_the_same_least_perturbation():
    """Under mixed precision the attack loss is scaled before its gradient is taken; FAB uses the
    gradient's size (the hyperplane's w and b), so it must undo the scale."""
    import keras

    from great_tf.precision import use_mixed_precision

    rng = np.random.default_rng(4)
    w = rng.normal(size=(12, 2)).astype(np.float32)
    use_mixed_precision(True)
    try:
        model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(2)])
    finally:
        use_mixed_precision(False)
    model.set_weights([w, np.array([0.0, 0.2], np.float32)])
    x = (0.4 + 0.2 * rng.random((6, 12))).astype(np.float32)
    score = x @ (w[:, 1] - w[:, 0]) + 0.2
    distance = np.abs(score) / np.abs(w[:, 1] - w[:, 0]).sum()
    found = linf_distances(attacks.fab(model, x, 1.0, y=(score > 0).astype(np.int32), nb_targets=1), x)
    np.testing.assert_allclose(found, distance, rtol=0.02)  # float16 logits: a coarser boundary
