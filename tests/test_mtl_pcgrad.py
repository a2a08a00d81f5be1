"""PCGrad (Yu et al. 2020) against gradient surgery done by hand on the task gradients' vectors.

Every registered method is also trained on two replicas against one device and through the
paper's network by tests/test_mtl_methods.py; here two replicas run three tasks (random orders).
"""

import numpy as np
import pytest
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.methods.pcgrad import pcgrad_weights, projection_order
from mtl_gradient_checks import (assert_three_task_update, assert_toy_update, logged_weights,
                                       three_task_toy_step, toy_step, two_replica_difference)


def surgery(vectors, order):
    """Algorithm 1 on the vectors themselves: g_i projected on the normal plane of each other
    ORIGINAL g_j it conflicts with, in `order[i]`; returns sum_i g_i^PC."""
    total = np.zeros_like(vectors[0], dtype=np.float64)
    for i, g in enumerate(vectors.astype(np.float64)):
        projected = g.copy()
        for j in order[i]:
            other = vectors[j].astype(np.float64)
            inner = projected @ other
            if inner < 0:
                projected -= inner / (other @ other) * other
        total += projected
    return total


@pytest.mark.parametrize("space", ["shared", "feature"])
def test_two_conflicting_tasks_are_each_projected_on_the_others_normal_plane(space):
    model, logs, hand = toy_step("pcgrad", batch_seed=5, space=space)
    g1, g2 = hand["vectors"][space].astype(np.float64)
    assert g1 @ g2 < 0  # the toy's gradients conflict, so both projections happen
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g1 @ g2) / (g1 @ g1) * g1)
    # The same update written in weights on the original gradients:
    weights = np.array([1 - (g1 @ g2) / (g1 @ g1), 1 - (g1 @ g2) / (g2 @ g2)])
    np.testing.assert_allclose(weights @ np.stack([g1, g2]), expected, rtol=1e-10)
    assert_toy_update(model, hand, weights, space)
    np.testing.assert_allclose(logged_weights(logs), weights, rtol=1e-5)


def test_three_tasks_follow_the_steps_random_order():
    model, logs, hand = three_task_toy_step("pcgrad", seed=4)
    order = projection_order(3, tf.constant([0, 0], tf.int64)).numpy()  # seed 0, step 0
    G = hand["G"].astype(np.float64)
    expected = surgery(G, order)
    assert not np.allclose(surgery(G, order[:, ::-1]), expected)  # here the order matters
    weights = np.linalg.lstsq(G.T, expected, rcond=None)[0]  # the update in terms of the g_i
    np.testing.assert_allclose(weights @ G, expected, rtol=1e-9, atol=1e-12)
    assert_three_task_update(model, hand, weights)
    np.testing.assert_allclose(logged_weights(logs, model.tasks), weights, rtol=1e-4, atol=1e-6)


def test_the_order_is_a_random_permutation_of_the_other_tasks_fixed_by_seed_and_step():
    orders = [tuple(map(tuple, projection_order(4, tf.constant([seed, step], tf.int64)).numpy()))
              for seed in (0, 1) for step in range(6)]
    for order in orders:
        for i, others in enumerate(order):
            assert sorted(others) == sorted(set(range(4)) - {i})
    assert len(set(orders)) > 6  # it changes with the step and the seed
    again = projection_order(4, tf.constant([1, 5], tf.int64)).numpy()
    np.testing.assert_array_equal(again, np.array(orders[11]))


def test_the_order_matters_only_with_conflicts_and_gradients_in_agreement_are_summed():
    agreeing = tf.constant([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 3.0]], tf.float64)
    order = projection_order(3, tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(pcgrad_weights(agreeing, order).numpy(), [1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 5))
    gram = tf.constant(vectors @ vectors.T)
    for seed in range(4):
        order = projection_order(3, tf.constant([seed, 7], tf.int64))
        weights = pcgrad_weights(gram, order).numpy()
        np.testing.assert_allclose(weights @ vectors, surgery(vectors, order.numpy()), rtol=1e-12)


def test_unknown_space_is_a_one_line_error():
    with pytest.raises(GreatError, match="unknown gradient space 'params'"):
        toy_step("pcgrad", space="params")


def test_two_replicas_give_the_single_device_step(mirrored, float64):
    moved, difference = two_replica_difference("pcgrad", mirrored)
    assert moved > 1e-3
    assert difference < 1e-9
