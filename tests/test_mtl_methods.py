"""Every registered multi-task method, through the same checks: exact under MirroredStrategy,
trains the paper's network (eagerly) through `build_mtl_model` + `compile_mtl` + `fit`, and DWA by
hand.

Two replicas: float64, SGD, the same global batch on one device and split over two logical CPU
replicas; every weight (network, method state, optimizers' variables aside) must agree within
1e-9 after three steps (DWA changes its weights after the second epoch; one step per epoch).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import mtl
from test_mtl import LR, TASKS, sgd, toy_batch, toy_losses_and_grads, toy_network, toy_weights

SIZE, BATCH, STEPS = 6, 4, 3


def small_network(tasks):
    from great_tf.mtl.network import tiny_multitask_network

    return tiny_multitask_network((SIZE, SIZE, 1), tasks)


DIST_TASKS = (mtl.Task("class", "classification", 3), mtl.Task("auto", "regression", 1))


def batches(steps=STEPS):
    rng = np.random.default_rng(1)
    x = rng.random((steps, BATCH, SIZE, SIZE, 1))
    return x, {"class": rng.integers(0, 3, (steps, BATCH)), "auto": rng.random((steps, BATCH, SIZE, SIZE, 1))}


def trained(method, strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder, decoders = small_network(DIST_TASKS)
        components = mtl.method_class(method).default_components(encoder.output.shape[1:], DIST_TASKS, 2)
        model = mtl.build_method(method, encoder, decoders, DIST_TASKS, **components)
        model.compile(optimizer=sgd(), **{name: sgd() for name in model.optimizer_variables()})
    data = tf.data.Dataset.from_tensor_slices(batches())
    model.fit(data, epochs=STEPS, steps_per_epoch=1, verbose=0, shuffle=False)
    return [v.numpy() for v in model.weights]


@pytest.mark.parametrize("method", mtl.available_methods())
def test_two_replicas_give_the_single_device_weights(method, mirrored, float64):
    single = trained(method, tf.distribute.get_strategy())
    double = trained(method, mirrored)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(single, double))
    assert worst < 1e-9, (method, worst)


@pytest.mark.parametrize("method", mtl.available_methods())
def test_every_method_trains_the_papers_network(method):
    keras.utils.set_random_seed(0)
    tasks = (mtl.Task("class", "classification", 10), mtl.Task("auto", "regression", 1))
    model = mtl.compile_mtl(mtl.build_mtl_model(method, (8, 8, 1), tasks, width=2), 2, 1)
    # Eagerly: this checks the wiring on the real encoder (shapes, GAL placement, metrics); the
    # compiled step of every method is checked above under MirroredStrategy, and tracing a
    # ResNet-18 step costs three times the eager run.
    model.run_eagerly = True
    rng = np.random.default_rng(0)
    x = rng.random((8, 8, 8, 1)).astype("float32")
    y = {"class": rng.integers(0, 10, 8).astype("int32"), "auto": x}
    before = [v.numpy().copy() for v in model.encoder.trainable_variables]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"])), method
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.encoder.trainable_variables))
    scores = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    assert set(model.metric_directions()) <= set(scores), method


def test_a_registered_method_builds_with_its_hyperparameters_and_rejects_unknown_ones():
    from great_tf.errors import GreatError

    encoder, decoders = toy_network()
    assert mtl.build_method("dwa", encoder, decoders, TASKS, temperature=3.0).temperature == 3.0
    with pytest.raises(GreatError, match="has no hyperparameter warmth"):
        mtl.build_method("dwa", encoder, decoders, TASKS, warmth=3.0)
    with pytest.raises(GreatError, match="unknown method 'magic'"):
        mtl.build_method("magic", encoder, decoders, TASKS)


def test_dwa_weights_follow_the_loss_ratios_of_the_last_two_epochs():
    """Liu et al. 2019, Eq. 7 by hand: with one step per epoch the loss averages are the step
    losses; steps 1 and 2 use w = 1, step 3 uses w_i = K softmax(L_i(2) / L_i(1) / T)_i."""
    encoder, decoders = toy_network()
    model = mtl.build_method("dwa", encoder, decoders, TASKS, temperature=2.0)
    model.compile(sgd())
    x, y = toy_batch()
    losses = []
    for step in range(3):
        W, V = toy_weights(model)
        J, gW, gV = toy_losses_and_grads(W, V, x, y)
        if step < 2:
            w = {"c": 1.0, "r": 1.0}
        else:
            ratios = np.array([losses[1]["c"] / losses[0]["c"], losses[1]["r"] / losses[0]["r"]]) / 2.0
            soft = np.exp(ratios) / np.exp(ratios).sum()
            w = {"c": 2 * soft[0], "r": 2 * soft[1]}
            assert abs(w["c"] - 1.0) > 1e-4  # the losses moved: the weights are not trivial
        model.train_step((x, y))
        model.end_epoch()  # a loop of one's own ends each epoch (fit does it by itself)
        np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                                   W - LR * (w["c"] * gW["c"] + w["r"] * gW["r"]), rtol=1e-5, atol=1e-7)
        for t in ("c", "r"):
            np.testing.assert_allclose(model.decoders[t].trainable_variables[0].numpy(),
                                       V[t] - LR * w[t] * gV[t], rtol=1e-5, atol=1e-7)
        losses.append(J)


def test_dwa_learns_its_epochs_from_fit():
    """A plain compile and fit, two steps per epoch: the third epoch's weights are Eq. 7 of the
    first two epochs' mean step losses, the whole SGD trajectory recomputed by hand."""
    encoder, decoders = toy_network()
    model = mtl.build_method("dwa", encoder, decoders, TASKS, temperature=2.0)
    model.compile(sgd())
    x, y = toy_batch()
    W, V = toy_weights(model)
    epoch_losses = []
    for epoch in range(3):
        w = {"c": 1.0, "r": 1.0}
        if epoch == 2:
            ratios = np.array([epoch_losses[1][t] / epoch_losses[0][t] for t in ("c", "r")]) / 2.0
            soft = np.exp(ratios) / np.exp(ratios).sum()
            w = {"c": 2 * soft[0], "r": 2 * soft[1]}
            assert abs(w["c"] - 1.0) > 1e-4
        sums = {"c": 0.0, "r": 0.0}
        for batch in (slice(0, 3), slice(3, 6)):
            J, gW, gV = toy_losses_and_grads(W, V, x[batch], {t: v[batch] for t, v in y.items()})
            W = W - LR * (w["c"] * gW["c"] + w["r"] * gW["r"])
            V = {t: V[t] - LR * w[t] * gV[t] for t in V}
            sums = {t: sums[t] + J[t] / 2 for t in sums}
        epoch_losses.append(sums)
    history = model.fit(x, y, batch_size=3, epochs=3, verbose=0, shuffle=False)
    assert history.history["train_weight_c"][2] == pytest.approx(w["c"], rel=1e-5)
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(), W, rtol=1e-5, atol=1e-7)
