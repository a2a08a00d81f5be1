"""DB-MTL (Lin et al. 2023): two steps by hand on the linear toy (log losses, the moving average
of the log-loss gradients with its beta_t schedule, max-norm scaling), and its state.

Under two replicas and through the paper's network it is checked with every method in
tests/test_mtl_methods.py.
"""

import numpy as np
import pytest

from great_tf import mtl
from great_tf.errors import GreatError
from test_mtl import LR, TASKS, sgd, toy_batch, toy_losses_and_grads, toy_network, toy_weights
from mtl_gradient_checks import resumed_equals_uninterrupted


def dbmtl_model(**hyperparameters):
    model = mtl.build_method("dbmtl", *toy_network(), TASKS, **hyperparameters)
    model.compile(sgd())
    return model


def test_two_steps_by_hand():
    beta, beta_sigma = 0.9, 0.5   # beta_t = 0.9 / sqrt(t): exercises the schedule
    model = dbmtl_model(beta=beta, beta_sigma=beta_sigma)
    average, logged = np.zeros((2, 6)), []
    for t in (1, 2):
        x, y = toy_batch(seed=t)
        W, V = toy_weights(model)
        J, gW, gV = toy_losses_and_grads(W, V, x, y)
        # d log(L_i + 1e-8) = dL_i / (L_i + 1e-8), for the shared parameters and each decoder
        log_grads = np.stack([gW["c"].ravel() / (J["c"] + 1e-8), gW["r"].ravel() / (J["r"] + 1e-8)])
        beta_t = beta / t**beta_sigma
        average = beta_t * average + (1 - beta_t) * log_grads
        norms = np.linalg.norm(average, axis=1)
        scales = norms.max() / (norms + 1e-8)
        logged.append(scales)
        logs = model.train_step((x, y))

        np.testing.assert_allclose(model.average.values.numpy(), average, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                                   W - LR * (scales @ average).reshape(W.shape), rtol=1e-5, atol=1e-6)
        for task in ("c", "r"):
            np.testing.assert_allclose(model.decoders[task].trainable_variables[0].numpy(),
                                       V[task] - LR * gV[task] / (J[task] + 1e-8), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([float(logs["train_weight_c"]), float(logs["train_weight_r"])],
                                   np.mean(logged, axis=0), rtol=1e-5)  # the metrics average the steps
        assert min(scales) == pytest.approx(1.0)  # the largest average keeps its norm
        assert max(scales) > 1.0


def test_the_averages_are_model_state_for_checkpoints():
    model = dbmtl_model()
    paths = [v.path for v in model.weights]
    assert "dbmtl_gradient_average/values" in paths
    assert model.average.values.shape == (2, 6)  # T x (the encoder's 3 x 2 kernel)
    assert "dbmtl_gradient_average/values" not in [v.path for v in model.trainable_weights]


def test_a_resumed_run_continues_the_averages_exactly(tmp_path):
    resumed_equals_uninterrupted(dbmtl_model, tmp_path)


@pytest.mark.parametrize("bad", [{"beta": 1.0}, {"beta": -0.1}, {"beta_sigma": -1.0}])
def test_bad_hyperparameters_are_one_line_errors(bad):
    with pytest.raises(GreatError, match="dbmtl needs"):
        dbmtl_model(**bad)
