"""APGD against an independent NumPy implementation of Croce & Hein's Algorithm 1 on a linear
model (hand-derived gradients of CE, DLR and targeted DLR), its checkpoint schedule against the
paper's recursion, and its restart/target protocol."""

import numpy as np
import pytest
import tensorflow as tf

from great_tf import attacks
from great_tf.attacks.apgd import apgd_start
from great_tf.errors import GreatError

CLASSES, SHAPE = 10, (2, 2, 3)
FEATURES = int(np.prod(SHAPE))


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(FEATURES, CLASSES))
    b = rng.normal(size=CLASSES) * 0.1
    x = rng.random((24,) + SHAPE)

    def model(v):
        return tf.matmul(tf.reshape(v, [-1, FEATURES]), tf.constant(w, tf.float32)) + b.astype(np.float32)

    return model, w, b, x.astype(np.float32)


def paper_checkpoints_percent():
    """w_j from p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in % of N."""
    p = [0, 22]
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return p[1:]


def test_checkpoints_follow_the_papers_recursion():
    is_check, window = attacks.checkpoint_schedule(100)
    positions = list(np.flatnonzero(is_check) + 1)
    assert positions == paper_checkpoints_percent() == [22, 41, 57, 70, 80, 87, 93, 99]
    np.testing.assert_array_equal(window[is_check], np.diff([0] + positions))
    # Short runs keep at least one step per window.
    is_check, window = attacks.checkpoint_schedule(10)
    assert list(np.flatnonzero(is_check) + 1) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_the_checkpoint_test_halves_on_either_condition():
    from great_tf.attacks.apgd import should_halve

    # Window of 10 steps: 7 rises is at most 0.75 * 10 (condition 1), 8 is not.
    rises = tf.constant([7.0, 8.0, 8.0, 8.0, 8.0])
    halved_before = tf.constant([False, False, True, False, False])
    best_before = tf.constant([1.0, 1.0, 1.0, 1.0, 2.0])
    best = tf.constant([1.0, 1.0, 1.0, 1.5, 2.0])
    # 1: oscillating; 2: no gain and not halved before (condition 2); 3: no gain but halved
    # before; 4: improved; 5: no gain, not halved before.
    np.testing.assert_array_equal(should_halve(rises, 10.0, halved_before, best_before, best).numpy(),
                                  [True, True, False, False, True])


# -- a NumPy APGD ---------------------------------------------------------------------------------
def np_objective(z, y, t, loss):
    """(value, d value / d z) per example, by hand."""
    n, rows = len(z), np.arange(len(z))
    onehot = lambda idx: np.eye(z.shape[1])[idx]
    if loss == "ce":
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return -np.log(p[rows, y]), p - onehot(y)
    order = np.argsort(-z, axis=1)
    if loss == "dlr":  # (max_{j != y} z_j - z_y) / (z_pi1 - z_pi3)
        masked = z.copy()
        masked[rows, y] = -np.inf
        other = masked.argmax(1)
        num = z[rows, other] - z[rows, y]
        den = z[rows, order[:, 0]] - z[rows, order[:, 2]] + 1e-12
        d_num, d_den = onehot(other) - onehot(y), onehot(order[:, 0]) - onehot(order[:, 2])
    else:  # targeted DLR: (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)
        num = z[rows, t] - z[rows, y]
        den = z[rows, order[:, 0]] - 0.5 * (z[rows, order[:, 2]] + z[rows, order[:, 3]]) + 1e-12
        d_num = onehot(t) - onehot(y)
        d_den = onehot(order[:, 0]) - 0.5 * onehot(order[:, 2]) - 0.5 * onehot(order[:, 3])
    assert n == len(num)
    return num / den, d_num / den[:, None] - (num / den**2)[:, None] * d_den


def np_apgd_run(w, b, x, y, t, start, eps, nb_iter, loss):
    shape = x.shape
    flat = lambda v: v.reshape(len(v), -1)
    project = lambda v: np.clip(np.clip(v, x - eps, x + eps), 0.0, 1.0)

    def evaluate(v):
        z = flat(v) @ w + b
        value, dz = np_objective(z, y, t, loss)
        return (dz @ w.T).reshape(shape), value, z.argmax(1) != y

    checks = paper_checkpoints_percent() if nb_iter == 100 else None
    x_adv = project(start)
    grad, value, fooled = evaluate(x_adv)
    x_fooled, x_best, grad_best, best = x_adv.copy(), x_adv.copy(), grad.copy(), value.copy()
    x_prev, step = x_adv.copy(), np.full(len(x), 2.0 * eps)
    rises, last_check = np.zeros(len(x)), 0
    best_at_check, halved_at_check = best.copy(), np.ones(len(x), bool)
    expand = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))
    for i in range(nb_iter):
        m = 1.0 if i == 0 else 0.75
        z = project(x_adv + expand(step) * np.sign(grad))
        x_prev, x_adv = x_adv, project(x_adv + m * (z - x_adv) + (1 - m) * (x_adv - x_prev))
        grad, new, wrong = evaluate(x_adv)
        x_fooled[wrong] = x_adv[wrong]
        fooled |= wrong
        rises += new > value
        value = new
        better = new > best
        x_best[better], grad_best[better], best[better] = x_adv[better], grad[better], new[better]
        if i + 1 in checks:
            halve = (rises <= 0.75 * (i + 1 - last_check)) | (~halved_at_check & (best_at_check >= best))
            step[halve] /= 2
            x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
            halved_at_check, best_at_check, rises, last_check = halve, best.copy(), np.zeros(len(x)), i + 1
    return x_fooled, fooled, x_best, best


def np_apgd(w, b, x, y, eps, loss, targeted=False, restarts=1, nb_targets=9, seed=0):
    """AutoAttack's driver: restarts (and targets) only on the examples not yet fooled."""
    z = x.reshape(len(x), -1) @ w + b
    fooled = z.argmax(1) != y
    result, best_x, best = x.copy(), x.copy(), np.full(len(x), -np.inf)
    order = np.argsort(-z, axis=1, kind="stable")
    positions = range(1, nb_targets + 1) if targeted else [None]
    for k, position in enumerate(positions):
        for r in range(restarts):
            todo = np.flatnonzero(~fooled)
            if todo.size == 0:
                break
            start = apgd_start(tf.constant(x[todo], tf.float32), eps, seed, k * restarts + r,
                               tf.constant(todo, tf.int64)).numpy().astype(np.float64)
            t = None if position is None else order[todo, position]
            x_f, now, x_b, value = np_apgd_run(w, b, x[todo], y[todo], t, start, eps, 100,
                                               "targeted dlr" if targeted else loss)
            result[todo[now]], fooled[todo[now]] = x_f[now], True
            higher = value > best[todo]
            best_x[todo[higher]], best[todo[higher]] = x_b[higher], value[higher]
    return np.where(fooled.reshape(-1, 1, 1, 1), result, best_x)


@pytest.mark.parametrize("loss, targeted, restarts", [("ce", False, 1), ("dlr", False, 2), ("dlr", True, 1)])
def test_apgd_matches_a_numpy_implementation_of_algorithm_1(linear, loss, targeted, restarts):
    model, w, b, x = linear
    y = attacks.predict_labels(model, x)
    y[:3] = (y[:3] + 1) % CLASSES  # three examples misclassified before the attack: left as they are
    eps = 0.04
    ours = attacks.apgd(model, x, eps, nb_iter=100, y=y, loss=loss, targeted=targeted, restarts=restarts,
                        nb_targets=3).numpy()
    reference = np_apgd(w, b, x.astype(np.float64), y, eps, loss, targeted, restarts, nb_targets=3)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_array_equal(ours[:3], x[:3])
    fooled = attacks.predict_labels(model, ours) != y
    assert 0 < fooled[3:].sum() < len(x) - 3  # both outcomes are exercised


def test_apgd_start_is_on_the_balls_surface_and_per_example(linear):
    _, _, _, x = linear
    start = apgd_start(tf.constant(x), 0.05, 0, 0, tf.range(len(x), dtype=tf.int64)).numpy()
    np.testing.assert_allclose(np.abs(start - x).reshape(len(x), -1).max(1), 0.05, rtol=1e-5)
    again = apgd_start(tf.constant(x[5:7]), 0.05, 0, 0, tf.constant([5, 6], tf.int64)).numpy()
    np.testing.assert_array_equal(again, start[5:7])


def test_apgd_is_at_least_as_strong_as_ifgsm_and_stays_in_the_ball(linear):
    model, _, _, x = linear
    y = attacks.predict_labels(model, x)
    for eps in (0.02, 0.05):
        x_adv = attacks.apgd(model, x, eps, nb_iter=50, y=y).numpy()
        assert np.abs(x_adv - x).max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        ifgsm = attacks.iterative_fgsm(model, x, eps, nb_iter=50, y=y).numpy()
        assert attacks.accuracy(model, x_adv, y) <= attacks.accuracy(model, ifgsm, y)


def test_apgd_batched_equals_one_batch(linear):
    model, _, _, x = linear
    whole = attacks.apgd(model, x, 0.04, nb_iter=10, loss="dlr", targeted=True, nb_targets=2).numpy()
    pieces = attacks.batched(attacks.apgd, model, x, batch_size=7, eps=0.04, nb_iter=10, loss="dlr",
                             targeted=True, nb_targets=2)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_apgd_errors_are_one_line(linear):
    model, _, _, x = linear
    with pytest.raises(GreatError, match="nb_targets 10 is more than the 9 other classes"):
        attacks.apgd(model, x, 0.1, targeted=True, nb_targets=10)
    two_classes = lambda v: model(v)[:, :2]
    with pytest.raises(GreatError, match="dlr loss needs at least 3 classes"):
        attacks.apgd(two_classes, x, 0.1, loss="dlr")
    three_classes = lambda v: model(v)[:, :3]
    with pytest.raises(GreatError, match="targeted dlr loss needs at least 4 classes"):
        attacks.apgd(three_classes, x, 0.1, loss="dlr", targeted=True, nb_targets=2)
