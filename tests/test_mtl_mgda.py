"""MGDA (Sener & Koltun 2018) against the two-task closed form and an exact min-norm solve.

Every registered method is also trained on two replicas against one device and through the
paper's network by tests/test_mtl_methods.py; here two replicas run three tasks (Frank-Wolfe)
in both gradient spaces (MGDA and MGDA-UB).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.methods.mgda import min_norm_weights
from mtl_gradient_checks import (assert_three_task_update, assert_toy_update, logged_weights,
                                       three_task_toy_step, toy_step, two_replica_difference)


def two_task_min_norm(g1, g2):
    """gamma in [0, 1] minimising |gamma g1 + (1 - gamma) g2|: the unconstrained optimum, clipped."""
    return float(np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0))


def exact_min_norm(gram):
    """The min-norm point of the simplex under `gram`, exactly: the KKT system on every support."""
    n = len(gram)
    best = None
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            s = list(support)
            kkt = np.block([[gram[np.ix_(s, s)], np.ones((size, 1))],
                            [np.ones((1, size)), np.zeros((1, 1))]])
            solution = np.linalg.lstsq(kkt, np.r_[np.zeros(size), 1.0], rcond=None)[0]
            w = np.zeros(n)
            w[s] = solution[:size]
            if w.min() >= -1e-12 and (best is None or w @ gram @ w < best @ gram @ best):
                best = w
    return best


@pytest.mark.parametrize("space", ["shared", "feature"])
def test_two_tasks_take_the_closed_form_min_norm_point(space):
    model, logs, hand = toy_step("mgda", space=space)
    g1, g2 = hand["vectors"][space].astype(np.float64)
    gamma = two_task_min_norm(g1, g2)
    assert 0.0 < gamma < 1.0  # an interior point: both gradients count
    assert_toy_update(model, hand, [gamma, 1.0 - gamma], space)
    np.testing.assert_allclose(logged_weights(logs), [gamma, 1.0 - gamma], rtol=1e-5)


def test_a_dominated_gradient_is_the_min_norm_point_itself():
    # g1 . g2 >= |g1|^2: the paper's Algorithm 1 gives gamma = 1 exactly (the reference 0.999).
    gram = tf.constant([[1.0, 2.0], [2.0, 9.0]], tf.float64)
    np.testing.assert_array_equal(min_norm_weights(gram).numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(min_norm_weights(tf.reverse(gram, [0, 1])).numpy(), [0.0, 1.0])


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_normalised_gradients_take_the_closed_form_of_their_own(normalization):
    model, logs, hand = toy_step("mgda", normalization=normalization)
    G = hand["vectors"]["shared"].astype(np.float64)
    norms, losses = np.linalg.norm(G, axis=1), hand["J"]
    n = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    gamma = two_task_min_norm(G[0] / n[0], G[1] / n[1])
    weights = np.array([gamma, 1.0 - gamma]) / n  # the update sum_i w_i g_i / n_i
    assert_toy_update(model, hand, weights)
    np.testing.assert_allclose(logged_weights(logs), weights, rtol=1e-5)


def test_three_tasks_reach_the_exact_min_norm_point_by_frank_wolfe():
    model, logs, hand = three_task_toy_step("mgda", seed=3)
    G = hand["G"].astype(np.float64)
    exact = exact_min_norm(G @ G.T)
    assert exact.min() > 0.1  # the optimum uses all three tasks: no pair is optimal
    weights = logged_weights(logs, model.tasks)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    # Frank-Wolfe stops when the weights move by < 1e-5: the min-norm point to about that.
    np.testing.assert_allclose(weights @ G, exact @ G, atol=2e-4 * np.linalg.norm(exact @ G))
    assert_three_task_update(model, hand, weights)


def test_frank_wolfe_agrees_with_the_exact_solve_on_random_gram_matrices():
    rng = np.random.default_rng(0)
    for _ in range(8):
        vectors = rng.normal(size=(4, 6)) + rng.normal(size=6)
        gram = vectors @ vectors.T
        weights = min_norm_weights(tf.constant(gram)).numpy()
        exact = exact_min_norm(gram)
        assert weights.min() >= 0 and abs(weights.sum() - 1) < 1e-12
        assert weights @ gram @ weights <= exact @ gram @ exact * (1 + 1e-4) + 1e-12


def test_unknown_normalization_is_a_one_line_error():
    with pytest.raises(GreatError, match="unknown MGDA normalization 'l1'.*loss\\+"):
        toy_step("mgda", normalization="l1")


@pytest.mark.parametrize("space", ["shared", "feature"])
def test_two_replicas_give_the_single_device_step(space, mirrored, float64):
    moved, difference = two_replica_difference("mgda", mirrored, space=space)
    assert moved > 1e-3
    assert difference < 1e-9
