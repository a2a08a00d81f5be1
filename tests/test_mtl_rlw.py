"""RLW (Lin et al. 2022): the step uses this step's stateless draw (by hand on the linear toy),
and the draws have the distributions they claim, differ step to step and repeat on resume.

That every replica draws the same weights is checked with every method in
tests/test_mtl_methods.py (two replicas == one device).
"""

import numpy as np
import pytest
import tensorflow as tf

from great_tf import mtl
from great_tf.errors import GreatError
from great_tf.mtl.methods.rlw import random_loss_weights
from test_mtl import LR, TASKS, sgd, toy_batch, toy_losses_and_grads, toy_network, toy_weights


def rlw_model(**hyperparameters):
    model = mtl.build_method("rlw", *toy_network(), TASKS, **hyperparameters)
    model.compile(sgd())
    return model


@pytest.mark.parametrize("distribution", ["normal", "dirichlet"])
def test_two_steps_by_hand_with_the_draw_of_each_step(distribution):
    model = rlw_model(distribution=distribution, seed=7)
    drawn = []
    for step in range(2):
        seed = tf.constant([7, step], tf.int64)
        if distribution == "normal":  # softmax of N(0, 1) draws, in NumPy
            z = tf.random.stateless_normal([2], seed).numpy().astype(np.float64)
            weights = np.exp(z) / np.exp(z).sum()
        else:                          # Dirichlet(1): normalised Gamma(1) draws, used as drawn
            g = tf.random.stateless_gamma([2], seed, alpha=1.0).numpy().astype(np.float64)
            weights = g / g.sum()
        drawn.append(weights)
        x, y = toy_batch(seed=step + 3)
        W, V = toy_weights(model)
        _, gW, gV = toy_losses_and_grads(W, V, x, y)
        model.train_step((x, y))
        np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                                   W - LR * (weights[0] * gW["c"] + weights[1] * gW["r"]), rtol=1e-5, atol=1e-6)
        for task, w in zip(("c", "r"), weights):
            np.testing.assert_allclose(model.decoders[task].trainable_variables[0].numpy(),
                                       V[task] - LR * w * gV[task], rtol=1e-5, atol=1e-6)
    assert not np.allclose(drawn[0], drawn[1])


def draws(distribution, seed=0, n=4000, tasks=3):
    """The weights of steps 0 .. n-1 (one traced map, not n eager draws)."""
    seeds = tf.stack([tf.fill([n], tf.constant(seed, tf.int64)), tf.range(n, dtype=tf.int64)], axis=1)
    draw = tf.function(lambda seeds: tf.map_fn(lambda s: random_loss_weights(tasks, s, distribution),
                                               seeds, fn_output_signature=tf.float32))
    return draw(seeds).numpy()


def test_the_draws_have_the_claimed_distributions():
    normal, dirichlet = draws("normal"), draws("dirichlet")
    for w in (normal, dirichlet):
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
        assert np.all(w > 0)
        np.testing.assert_allclose(w.mean(axis=0), 1 / 3, atol=0.02)  # symmetric in the tasks
    # Dirichlet(1, 1, 1) is uniform on the simplex: each weight has variance (1 * 2) / (3^2 * 4) = 1/18.
    np.testing.assert_allclose(dirichlet.var(axis=0), 1 / 18, rtol=0.1)
    # Softmax of standard normals stays closer to equal weights than a uniform simplex draw.
    assert normal.var(axis=0).max() < dirichlet.var(axis=0).min()


def test_the_draw_depends_only_on_the_seed_and_the_step():
    model = rlw_model(seed=3)
    first = model.current_weights().numpy()
    np.testing.assert_array_equal(rlw_model(seed=3).current_weights().numpy(), first)  # a resumed run
    assert not np.allclose(rlw_model(seed=4).current_weights().numpy(), first)
    model.optimizer.iterations.assign(1)
    assert not np.allclose(model.current_weights().numpy(), first)
    assert [v.path for v in model.weights] == [v.path for v in model.network_variables]  # no state


@pytest.mark.parametrize("bad, message", [({"distribution": "uniform"}, "unknown rlw distribution"),
                                          ({"concentration": 0.0}, "positive Dirichlet concentration")])
def test_bad_hyperparameters_are_one_line_errors(bad, message):
    with pytest.raises(GreatError, match=message):
        rlw_model(**bad)
