"""CAGrad (Liu et al. 2021) against its dual solved independently and its primal checked directly.

Two replicas against one device (the SciPy solve on the global Gram matrix) and the paper's
network: tests/test_mtl_methods.py, for every registered method.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize_scalar

from great_tf.errors import GreatError
from great_tf.mtl.methods.cagrad import cagrad_weights
from mtl_gradient_checks import (assert_three_task_update, assert_toy_update, logged_weights,
                                       three_task_toy_step, toy_step)

C = 0.4


def cagrad_update(vectors, w, c):
    """d = g_0 + c |g_0| g_w / |g_w| (before rescaling), g_0 the mean gradient."""
    g0, gw = vectors.mean(0), w @ vectors
    return g0 + c * np.linalg.norm(g0) * gw / np.linalg.norm(gw)


def two_task_dual(g1, g2, c):
    """The dual min_{w = (a, 1 - a)} g_w . g_0 + c |g_0| |g_w| by a bounded scalar search."""
    vectors = np.stack([g1, g2])
    g0 = vectors.mean(0)

    def dual(a):
        gw = a * g1 + (1 - a) * g2
        return gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw)

    a = minimize_scalar(dual, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-12}).x
    return np.array([a, 1.0 - a])


@pytest.mark.parametrize("space", ["shared", "feature"])
def test_two_tasks_match_the_dual_solved_by_a_scalar_search(space):
    model, logs, hand = toy_step("cagrad", space=space)
    vectors = hand["vectors"][space].astype(np.float64)
    w = two_task_dual(*vectors, C)  # (1, 0) here: the toy's first gradient is much the smaller
    d = cagrad_update(vectors, w, C) / (1 + C**2)
    weights = np.linalg.lstsq(vectors.T, d, rcond=None)[0]
    assert_toy_update(model, hand, weights, space)
    np.testing.assert_allclose(logged_weights(logs), weights, rtol=1e-4)


def test_the_dual_solve_matches_a_scalar_search_inside_the_simplex():
    rng = np.random.default_rng(0)
    interior = 0
    for _ in range(10):
        vectors = rng.normal(size=(2, 5))
        vectors *= rng.uniform(0.8, 1.2, (2, 1)) / np.linalg.norm(vectors, axis=1, keepdims=True)
        w = two_task_dual(*vectors, C)
        interior += 0.01 < w[0] < 0.99
        weights = cagrad_weights(tf.constant(vectors @ vectors.T), C, rescale=0).numpy()
        np.testing.assert_allclose(weights @ vectors, cagrad_update(vectors, w, C), rtol=1e-6, atol=1e-7)
    assert interior >= 5


@pytest.mark.parametrize("rescale, divisor", [(0, 1.0), (1, 1 + C**2), (2, 1 + C)])
def test_rescale_divides_the_update_as_the_reference(rescale, divisor):
    _, logs, hand = toy_step("cagrad", rescale=rescale)
    vectors = hand["vectors"]["shared"].astype(np.float64)
    d = cagrad_update(vectors, two_task_dual(*vectors, C), C) / divisor
    np.testing.assert_allclose(logged_weights(logs) @ vectors, d, rtol=1e-4, atol=1e-7)


def test_c_zero_is_the_average_gradient():
    model, logs, hand = toy_step("cagrad", c=0.0)
    np.testing.assert_allclose(logged_weights(logs), [0.5, 0.5], rtol=1e-6)
    assert_toy_update(model, hand, [0.5, 0.5])


def test_three_tasks_maximise_the_worst_improvement_within_the_ball():
    """The primal (the paper's Eq. 3), checked without the dual: d maximises min_i g_i . d over
    |d - g_0| <= c |g_0|; the maximiser lies on the sphere, in the span of the gradients."""
    model, logs, hand = three_task_toy_step("cagrad", seed=4)
    G = hand["G"].astype(np.float64)
    weights = logged_weights(logs, model.tasks)
    assert_three_task_update(model, hand, weights)
    d = (1 + C**2) * weights @ G
    g0 = G.mean(0)
    radius = C * np.linalg.norm(g0)
    np.testing.assert_allclose(np.linalg.norm(d - g0), radius, rtol=1e-6)
    basis = np.linalg.qr(G.T)[0]  # orthonormal basis of the span, [P, 3]
    directions = np.random.default_rng(0).normal(size=(200_000, 3))
    candidates = g0 + radius * (directions / np.linalg.norm(directions, axis=1, keepdims=True)) @ basis.T
    best_sampled = (candidates @ G.T).min(1).max()
    worst_improvement = (G @ d).min()
    assert worst_improvement >= best_sampled - 1e-9
    assert worst_improvement - best_sampled < 1e-3 * abs(best_sampled)  # the sampling is dense
    assert worst_improvement > (G @ g0).min()  # better for the worst task than the average


@pytest.mark.parametrize("hyperparameters, message", [({"c": -0.1}, "c must be >= 0"),
                                                      ({"rescale": 3}, "rescale must be 0, 1")])
def test_bad_hyperparameters_are_one_line_errors(hyperparameters, message):
    with pytest.raises(GreatError, match=message):
        toy_step("cagrad", **hyperparameters)
