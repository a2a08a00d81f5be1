"""Nash-MTL (Navon et al. 2022): the bargaining condition G G^T alpha = 1/alpha, its two-task
closed form, steps by hand on the linear toys, the collapse guard and the update schedule.

Under two replicas and through the paper's network it is checked with every method in
tests/test_mtl_methods.py.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import fsolve

from great_tf import mtl
from great_tf.errors import GreatError
from great_tf.mtl.methods.nashmtl import bargaining_weights
from mtl_gradient_checks import (TASKS, assert_three_task_update, assert_toy_update, compile_sgd,
                                 logged_weights, resumed_equals_uninterrupted, three_task_toy_step,
                                 toy_step)
from test_mtl import LR, toy_batch, toy_losses_and_grads, toy_network, toy_weights


def two_task_closed_form(gram):
    """alpha_i = 1 / (|g_i| sqrt(1 + cos)): with u_i = alpha_i |g_i| the condition reads
    u_1 (u_1 + cos u_2) = 1 = u_2 (cos u_1 + u_2), so u_1 = u_2 = 1 / sqrt(1 + cos)."""
    norms = np.sqrt(np.diag(gram))
    cos = gram[0, 1] / (norms[0] * norms[1])
    return 1.0 / (norms * np.sqrt(1.0 + cos))


def test_the_solution_satisfies_the_bargaining_condition():
    rng = np.random.default_rng(3)
    G = rng.normal(size=5) + rng.normal(size=(4, 5)) * 1.5   # four tasks, some in conflict
    G *= np.array([[0.01], [1.0], [30.0], [0.2]])             # and very different scales
    gram = G @ G.T
    alpha, ok = bargaining_weights(gram)
    assert ok and np.all(alpha > 0)
    np.testing.assert_allclose(gram @ alpha, 1.0 / alpha, rtol=1e-10)
    warm, ok = bargaining_weights(gram, start=alpha * 1.7)   # a warm start changes nothing
    np.testing.assert_allclose(warm, alpha, rtol=1e-10)
    # alpha^T K alpha = sum_i alpha_i (K alpha)_i = T: the update's squared norm is the task count
    np.testing.assert_allclose(alpha @ gram @ alpha, 4.0, rtol=1e-10)


@pytest.mark.parametrize("gradients", [[[3.0, 0.5, -1.0], [-0.2, 2.0, 0.7]],     # 97 degrees
                                       [[1.0, 0.0, 0.0], [1e3, 1e3, 0.0]],        # 45, scales 1:1414
                                       [[2.0, 1.0, 0.0], [4.0, 2.0, 0.0]]])       # parallel
def test_two_tasks_match_the_closed_form(gradients):
    G = np.array(gradients)
    alpha, ok = bargaining_weights(G @ G.T)
    assert ok
    np.testing.assert_allclose(alpha, two_task_closed_form(G @ G.T), rtol=1e-10)


@pytest.mark.parametrize("gram", [
    [[1.0, -1.0], [-1.0, 1.0]],                                      # two opposed gradients
    [[1.0, 0.0], [0.0, 0.0]],                                        # a zero gradient
    [[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]],      # three summing to zero
    [[np.nan, 0.0], [0.0, 1.0]],
])
def test_no_solution_when_a_convex_combination_of_the_gradients_vanishes(gram):
    _, ok = bargaining_weights(np.array(gram))
    assert not ok


@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_one_step_by_hand_with_and_without_the_norm_clip(max_norm):
    model, logs, hand = toy_step("nashmtl", max_norm=max_norm)
    G = hand["vectors"]["shared"].astype(np.float64)
    alpha = two_task_closed_form(G @ G.T)
    assert np.all(alpha > 1e-3)  # the floor is not what this step tests
    # |sum_i alpha_i g_i| = sqrt(T) = sqrt(2) > 1: with the clip the shared update is scaled down
    update_norm = np.linalg.norm(alpha @ G)
    np.testing.assert_allclose(update_norm, np.sqrt(2.0), rtol=1e-6)
    clip = min(1.0, max_norm / update_norm) if max_norm > 0 else 1.0
    assert_toy_update(model, hand, alpha * clip, decoder_weights=alpha)
    np.testing.assert_allclose(logged_weights(logs), alpha, rtol=1e-5)
    np.testing.assert_allclose(model.alpha.values.numpy(), alpha, rtol=1e-5)
    assert float(logs["train_nash_fallback"]) == 0.0


def test_three_tasks_by_hand_against_an_independent_root_finder():
    model, logs, hand = three_task_toy_step("nashmtl", max_norm=0.0)
    gram = hand["G"].astype(np.float64) @ hand["G"].T.astype(np.float64)
    # In alpha = exp(z), so that the root found is the positive one.
    alpha = np.exp(fsolve(lambda z: np.exp(z) * (gram @ np.exp(z)) - 1.0, np.zeros(3), xtol=1e-13))
    np.testing.assert_allclose(gram @ alpha, 1.0 / alpha, rtol=1e-8)
    assert_three_task_update(model, hand, alpha, decoder_weights=alpha)
    np.testing.assert_allclose(logged_weights(logs, model.tasks), alpha, rtol=1e-5)


def toy_model(**hyperparameters):
    return compile_sgd(mtl.build_method("nashmtl", *toy_network(), TASKS, **hyperparameters))


def test_a_failed_solve_keeps_the_previous_weights_and_the_floor_holds():
    model = toy_model(min_weight=0.3)
    model.alpha.values.assign([0.5, 2.0])
    opposed = tf.constant([[1.0, -1.0], [-1.0, 1.0]])
    np.testing.assert_allclose(model.current_alpha(opposed).numpy(), [0.5, 2.0])
    assert float(model.fallback_tracker.result()) == 1.0
    # A solvable matrix whose solution lies partly under the floor: floored, not rejected.
    gram = np.array([[100.0, 0.0], [0.0, 1.0]], np.float32)      # alpha = (0.1, 1)
    np.testing.assert_allclose(model.current_alpha(tf.constant(gram)).numpy(), [0.3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(model.alpha.values.numpy(), [0.3, 1.0], rtol=1e-6)
    assert float(model.fallback_tracker.result()) == 0.5


def test_weights_are_solved_every_k_steps_and_reused_in_between():
    model = toy_model(update_weights_every=2, max_norm=0.0)
    solved = []
    for step in range(3):
        x, y = toy_batch(seed=20 + step)
        W, V = toy_weights(model)
        _, gW, gV = toy_losses_and_grads(W, V, x, y)
        G = np.stack([gW["c"].ravel(), gW["r"].ravel()]).astype(np.float64)
        expected = two_task_closed_form(G @ G.T) if step != 1 else solved[0]
        model.train_step((x, y))
        solved.append(model.alpha.values.numpy().copy())
        np.testing.assert_allclose(solved[-1], expected, rtol=1e-5)
        # The step used those weights: the encoder moved along sum_i alpha_i g_i.
        np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                                   W - LR * (expected[0] * gW["c"] + expected[1] * gW["r"]),
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(solved[2], solved[0])


def test_the_weights_are_model_state_for_checkpoints():
    model = toy_model()
    assert "nash_alpha/values" in [v.path for v in model.weights]
    assert "nash_alpha/values" not in [v.path for v in model.trainable_weights]


def test_a_resumed_run_reuses_the_checkpointed_weights(tmp_path):
    # Resumed after step 0 (solved), step 1 reuses that alpha: only the checkpoint has it.
    resumed_equals_uninterrupted(lambda: toy_model(update_weights_every=2), tmp_path)


def test_xla_is_refused_in_one_line():
    from great_tf.distribute import enable_jit

    model = toy_model()
    assert model.jit_compile is False
    with pytest.raises(GreatError, match="XLA"):
        enable_jit(model)


@pytest.mark.parametrize("bad", [{"update_weights_every": 0}, {"max_norm": -1.0}, {"min_weight": -0.1}])
def test_bad_hyperparameters_are_one_line_errors(bad):
    with pytest.raises(GreatError, match="nashmtl needs"):
        toy_model(**bad)
