"""IMTL (Liu et al. 2021): IMTL-G's closed form, IMTL-L's learned scales and their hybrid by hand.

Two replicas against one device and the paper's network: tests/test_mtl_methods.py (every
registered method, IMTL's default hybrid with its scale optimizer).
"""

import numpy as np
import pytest
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.methods.imtl import imtl_g_weights
from mtl_gradient_checks import (LR, assert_three_task_update, assert_toy_update,
                                       logged_weights, three_task_toy_step, toy_step)

S = np.array([0.3, -0.4], np.float32)  # loss scales s_t = log of the weights e^{s_t}


def two_task_imtl_g(g1, g2):
    """Equal projections on u_1 and u_2 in the span of two gradients: the bisector u_1 + u_2,
    i.e. alpha_t proportional to 1/|g_t|, normalised to sum 1."""
    inverse = 1.0 / np.array([np.linalg.norm(g1), np.linalg.norm(g2)])
    return inverse / inverse.sum()


def equal_projection_weights(vectors):
    """alpha with sum 1 and (sum_t alpha_t g_t) . (u_1 - u_t) = 0 for t > 1: a linear system."""
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [(vectors @ (units[0] - units[t])) for t in range(1, len(vectors))]
    system = np.vstack(rows + [np.ones(len(vectors))])
    return np.linalg.solve(system, np.r_[np.zeros(len(vectors) - 1), 1.0])


@pytest.mark.parametrize("space", ["shared", "feature"])
def test_imtl_g_on_two_tasks_weighs_each_gradient_by_its_inverse_norm(space):
    model, logs, hand = toy_step("imtl", variant="g", space=space)
    vectors = hand["vectors"][space].astype(np.float64)
    alpha = two_task_imtl_g(*vectors)
    g = alpha @ vectors
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(g @ units[0], g @ units[1], rtol=1e-10)  # the defining property
    assert_toy_update(model, hand, alpha, space)
    np.testing.assert_allclose(logged_weights(logs), alpha, rtol=1e-5)


def test_imtl_g_on_three_tasks_equalises_the_projections():
    model, logs, hand = three_task_toy_step("imtl", seed=4, variant="g")
    G = hand["G"].astype(np.float64)
    alpha = equal_projection_weights(G)
    assert_three_task_update(model, hand, alpha)
    np.testing.assert_allclose(logged_weights(logs, model.tasks), alpha, rtol=1e-4)
    projections = (alpha @ G) @ (G / np.linalg.norm(G, axis=1, keepdims=True)).T
    np.testing.assert_allclose(projections, projections[0], rtol=1e-9)


def test_imtl_g_closed_form_matches_the_linear_system_on_random_gradients():
    rng = np.random.default_rng(0)
    for tasks in (2, 3, 5):
        vectors = rng.normal(size=(tasks, 7)) * rng.uniform(0.1, 10, (tasks, 1))
        alpha = imtl_g_weights(tf.constant(vectors @ vectors.T)).numpy()
        np.testing.assert_allclose(alpha, equal_projection_weights(vectors), rtol=1e-8, atol=1e-10)


def test_a_zero_gradient_falls_back_to_the_average():
    gram = tf.constant([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], tf.float64)
    np.testing.assert_allclose(imtl_g_weights(gram).numpy(), [1 / 3] * 3)


def step_with_scales(variant, space="shared"):
    """One step with the loss scales set to S (the network update uses them, then s learns)."""
    return toy_step("imtl", variant=variant, space=space,
                    prepare=lambda model: model.log_scales.values.assign(S))


def assert_scales_learned(model, hand):
    """s_t <- s_t - LR (e^{s_t} L_t - 1): the gradient of e^{s_t} L_t - s_t."""
    expected = S - LR * (np.exp(S) * hand["J"] - 1.0)
    np.testing.assert_allclose(model.log_scales.values.numpy(), expected, rtol=1e-5)


def test_imtl_l_weighs_every_loss_by_its_learned_scale():
    model, logs, hand = step_with_scales("l")
    scales = np.exp(S)
    assert_toy_update(model, hand, scales, decoder_weights=scales)
    assert_scales_learned(model, hand)
    np.testing.assert_allclose(logged_weights(logs), scales, rtol=1e-6)


@pytest.mark.parametrize("space", ["shared", "feature"])
def test_hybrid_balances_the_scaled_gradients_and_scales_the_decoders(space):
    model, logs, hand = step_with_scales("hybrid", space)
    scales = np.exp(S).astype(np.float64)
    scaled = scales[:, None] * hand["vectors"][space].astype(np.float64)  # gradients of e^s L
    weights = two_task_imtl_g(*scaled) * scales  # on the raw gradients
    assert_toy_update(model, hand, weights, space, decoder_weights=scales)
    assert_scales_learned(model, hand)
    np.testing.assert_allclose(logged_weights(logs), weights, rtol=1e-5)


def test_imtl_g_has_no_scales_to_train():
    model, _, _ = toy_step("imtl", variant="g")
    assert model.optimizer_variables() == {}
    assert not model.log_scales.trainable_weights


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(GreatError, match="unknown IMTL variant 'gl'"):
        toy_step("imtl", variant="gl")
