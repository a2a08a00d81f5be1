"""FAMO (Liu et al. 2023): one step by hand on the linear toy, the logits' step from the losses
after the update on the same batch, and the logits' optimizer defaults.

Under two replicas and through the paper's network it is checked with every method in
tests/test_mtl_methods.py (SGD for the logits there, so a wrongly scaled logit gradient shows).
"""

import numpy as np
import pytest

from great_tf import mtl
from great_tf.errors import GreatError
from test_mtl import LR, TASKS, sgd, toy_batch, toy_losses_and_grads, toy_network, toy_weights
from mtl_gradient_checks import resumed_equals_uninterrupted


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def famo_model(**hyperparameters):
    return mtl.build_method("famo", *toy_network(), TASKS, **hyperparameters)


@pytest.mark.parametrize("min_losses", [None, (0.2, 0.05)])
def test_one_step_by_hand_then_the_logits_step_from_the_losses_after_it(min_losses):
    gamma = 0.01
    model = famo_model(gamma=gamma, min_losses=min_losses)
    model.compile(sgd(), weight_optimizer=sgd())
    logits = np.array([0.4, -0.3], np.float32)
    model.logits.values.assign(logits)
    x, y = toy_batch()
    W, V = toy_weights(model)
    J, gW, gV = toy_losses_and_grads(W, V, x, y)
    losses = np.array([J["c"], J["r"]])
    floor = np.zeros(2) if min_losses is None else np.array(min_losses)
    assert np.all(losses > floor)

    # The network descends sum_i z_i log(L_i - L_i*) / c with c = sum_i z_i / (L_i - L_i*) fixed.
    z = softmax(logits.astype(np.float64))
    gaps = losses - floor + 1e-8
    weights = z / gaps / np.sum(z / gaps)
    logs = model.train_step((x, y))
    W1 = W - LR * (weights[0] * gW["c"] + weights[1] * gW["r"])
    V1 = {t: V[t] - LR * w * gV[t] for t, w in zip(("c", "r"), weights)}
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(), W1, rtol=1e-5, atol=1e-6)
    for t in ("c", "r"):
        np.testing.assert_allclose(model.decoders[t].trainable_variables[0].numpy(), V1[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([float(logs["train_weight_c"]), float(logs["train_weight_r"])], weights, rtol=1e-5)

    # Then the logits: the same batch after the update, delta = log gap before - log gap after,
    # gradient J_softmax^T delta + gamma * logits, one SGD step.
    J1, _, _ = toy_losses_and_grads(W1, V1, x, y)
    after = np.array([J1["c"], J1["r"]])
    delta = np.log(gaps) - np.log(after - floor + 1e-8)
    jacobian = np.diag(z) - np.outer(z, z)
    expected = logits - LR * (jacobian.T @ delta + gamma * logits)
    np.testing.assert_allclose(model.logits.values.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(expected, logits)


def test_the_logits_optimizer_is_the_papers_adam_unless_given():
    model = famo_model()
    model.compile(sgd())
    assert model.weight_optimizer.__class__.__name__ == "Adam"
    np.testing.assert_allclose(float(model.weight_optimizer.learning_rate), 0.025)
    model = famo_model(weight_lr=0.1)
    model.compile(sgd(), weight_optimizer=sgd())
    assert model.weight_optimizer.__class__.__name__ == "SGD"
    # compile_mtl gives the network (and other methods' variables) the poly Adam, not the logits.
    model = mtl.compile_mtl(famo_model(), steps_per_epoch=2, epochs=1)
    np.testing.assert_allclose(float(model.weight_optimizer.learning_rate), 0.025)
    from great_tf.schedules import PolyDecay

    assert isinstance(model.optimizer._learning_rate, PolyDecay)
    assert not isinstance(model.weight_optimizer._learning_rate, PolyDecay)


def test_the_logits_are_model_state_for_checkpoints():
    model = famo_model()
    assert "famo_logits/values" in [v.path for v in model.weights]
    model.compile(sgd())
    assert model.optimizer_variables()["weight_optimizer"][0].path == "famo_logits/values"


def test_a_resumed_run_continues_the_logits_and_their_adam_exactly(tmp_path):
    def build():
        model = famo_model()
        model.compile(sgd())  # the logits get their default Adam, whose moments are state too
        return model

    resumed_equals_uninterrupted(build, tmp_path)


@pytest.mark.parametrize("bad, message", [({"gamma": -1.0}, "famo needs"), ({"weight_lr": 0.0}, "famo needs"),
                                          ({"min_losses": (0.0,)}, "min_losses has 1 values")])
def test_bad_hyperparameters_are_one_line_errors(bad, message):
    with pytest.raises(GreatError, match=message):
        famo_model(**bad)
