"""Shared checks for the gradient-combining multi-task methods (tests/test_mtl_<method>.py).

- `toy_step`: one SGD step of a method on the linear toy of tests/test_mtl.py, with the hand
  gradients (parameters and shared feature) the test compares it with;
- `three_task_toy_step`: the same on a linear toy with three regression tasks (solvers, orders and
  closed forms that two tasks do not exercise);
- `two_replica_difference`: float64 weights after two `fit` steps on two replicas against one
  device, on a small conv net with synchronized BatchNorm and three tasks (tests/test_mtl_methods.py
  runs every registered method on two tasks, and through the paper's network).
"""

import keras
import numpy as np
import tensorflow as tf

from great_tf import mtl
from test_distributed import BATCH, SIZE, conv_net, max_difference
from test_mtl import (LR, TASKS, sgd, softmax, toy_batch, toy_losses_and_grads, toy_network,
                            toy_weights)


def compile_sgd(model):
    model.compile(sgd(), **{name: sgd() for name in model.optimizer_variables()})
    return model


def kernels(model):
    """The encoder's kernel and each decoder's, {task: kernel} (the linear toys' only weights)."""
    return model.encoder.trainable_variables[0].numpy(), {
        t.name: model.decoders[t.name].trainable_variables[0].numpy() for t in model.tasks}


# -- the two-task linear toy ----------------------------------------------------------------
def toy_feature_grads(W, V, x, y):
    """dJ_t/df, f = x W, for the toy's tasks (c: softmax cross-entropy, r: squared error)."""
    n = len(x)
    f = x @ W
    d_logits = (softmax(f @ V["c"]) - np.eye(3)[y["c"]]) / n
    d_out = 2 * (f @ V["r"] - y["r"]) / n
    return {"c": d_logits @ V["c"].T, "r": d_out @ V["r"].T}


def toy_step(method, batch_seed=1, prepare=None, **hyperparameters):
    """One train step of `method` on the toy (batch `toy_batch(batch_seed)`), after
    `prepare(model)` if given (to set a method's state). Returns (model, logs, hand) where `hand`
    holds the step's inputs computed by hand: W, V, losses J, gradients gW, gV and feature
    gradients gF (dicts by task) and, per space, the flattened task gradients `vectors[space]`."""
    encoder, decoders = toy_network()
    model = compile_sgd(mtl.build_method(method, encoder, decoders, TASKS, **hyperparameters))
    if prepare is not None:
        prepare(model)
    x, y = toy_batch(batch_seed)
    W, V = toy_weights(model)
    J, gW, gV = toy_losses_and_grads(W, V, x, y)
    gF = toy_feature_grads(W, V, x, y)
    np.testing.assert_allclose(x.T @ gF["c"], gW["c"], rtol=1e-5, atol=1e-7)  # the hand chain rule
    logs = model.train_step((x, y))
    names = [t.name for t in TASKS]
    hand = {"W": W, "V": V, "J": np.array([J[t] for t in names]), "gW": gW, "gV": gV, "gF": gF,
            "x": x, "vectors": {"shared": np.stack([gW[t].ravel() for t in names]),
                                "feature": np.stack([gF[t].ravel() for t in names])}}
    return model, logs, hand


def expected_encoder(hand, weights, space="shared"):
    """W after SGD on the update sum_t w_t g_t of the task gradients in `space`."""
    names = [t.name for t in TASKS]
    if space == "shared":
        update = sum(w * hand["gW"][t] for w, t in zip(weights, names))
    else:
        update = hand["x"].T @ sum(w * hand["gF"][t] for w, t in zip(weights, names))
    return hand["W"] - LR * update


def assert_toy_update(model, hand, weights, space="shared", decoder_weights=(1.0, 1.0)):
    """The encoder moved along sum_t w_t g_t and every decoder along its own (weighted) gradient."""
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                               expected_encoder(hand, weights, space), rtol=1e-5, atol=1e-6)
    for t, w in zip([t.name for t in TASKS], decoder_weights):
        np.testing.assert_allclose(model.decoders[t].trainable_variables[0].numpy(),
                                   hand["V"][t] - LR * w * hand["gV"][t], rtol=1e-5, atol=1e-6)


def logged_weights(logs, tasks=TASKS):
    return np.array([float(logs[f"train_weight_{t.name}"]) for t in tasks])


# -- a three-task linear toy ----------------------------------------------------------------
THREE_TASKS = (mtl.Task("a", "regression", 1), mtl.Task("b", "regression", 1),
               mtl.Task("d", "regression", 1))


def three_task_toy_step(method, seed=0, **hyperparameters):
    """One SGD step of `method` on x -> x W -> three linear squared-error heads. Returns (model,
    logs, hand) with the flattened encoder gradients `hand["G"]` [3, 6], `hand["W"]` and the
    decoder gradients `hand["gV"]`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    encoder = keras.Model(inputs, keras.layers.Dense(2, use_bias=False)(inputs))
    decoders = {}
    for task in THREE_TASKS:
        feature = keras.Input((2,))
        decoders[task.name] = keras.Model(feature, keras.layers.Dense(1, use_bias=False)(feature))
    model = compile_sgd(mtl.build_method(method, encoder, decoders, THREE_TASKS, **hyperparameters))
    rng = np.random.default_rng(seed + 11)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = {t.name: rng.normal(size=(5, 1)).astype(np.float32) for t in THREE_TASKS}
    W, V = kernels(model)
    f = x @ W
    residual = {t: f @ V[t] - y[t] for t in V}
    d_out = {t: 2 * residual[t] / len(x) for t in V}
    gW = np.stack([(x.T @ (d_out[t] @ V[t].T)).ravel() for t in V])
    gV = {t: f.T @ d_out[t] for t in V}
    J = np.array([np.mean(residual[t] ** 2) for t in V])
    logs = model.train_step((x, y))
    return model, logs, {"W": W, "V": V, "G": gW, "gV": gV, "J": J}


def assert_three_task_update(model, hand, weights, decoder_weights=(1.0, 1.0, 1.0)):
    W = hand["W"] - LR * (np.asarray(weights) @ hand["G"]).reshape(hand["W"].shape)
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(), W, rtol=1e-5, atol=1e-6)
    for t, w in zip(hand["V"], decoder_weights):
        np.testing.assert_allclose(model.decoders[t].trainable_variables[0].numpy(),
                                   hand["V"][t] - LR * w * hand["gV"][t], rtol=1e-5, atol=1e-6)


# -- two replicas against one device ---------------------------------------------------------
CLASSES = 3
CONV_TASKS = (mtl.Task("class", "classification", CLASSES), mtl.Task("auto", "regression", 1),
              mtl.Task("mean", "regression", 1))


def build_conv_model(method, hyperparameters):
    """tests/test_distributed.py's conv encoder (synchronized BatchNorm) with three decoders."""
    keras.utils.set_random_seed(0)
    encoder = conv_net(None, pool=False, name="encoder")
    head = keras.Input(encoder.output.shape[1:])
    pooled = keras.layers.GlobalAveragePooling2D()
    decoders = {"class": keras.Model(head, keras.layers.Dense(CLASSES)(pooled(head))),
                "auto": keras.Model(head, keras.layers.Conv2D(1, 1)(head)),
                "mean": keras.Model(head, keras.layers.Dense(1)(pooled(head)))}
    return compile_sgd(mtl.build_method(method, encoder, decoders, CONV_TASKS, **hyperparameters))


def conv_batches(steps):
    rng = np.random.default_rng(1)
    x = rng.random((steps, BATCH, SIZE, SIZE, 1))
    y = {"class": rng.integers(0, CLASSES, (steps, BATCH)),
         "auto": rng.random((steps, BATCH, SIZE, SIZE, 1)), "mean": rng.normal(size=(steps, BATCH, 1))}
    return x, y


def trained_weights(method, hyperparameters, strategy, steps=2):
    with strategy.scope():
        model = build_conv_model(method, hyperparameters)
    initial = [v.numpy() for v in model.weights]
    data = tf.data.Dataset.from_tensor_slices(conv_batches(steps))
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return initial, [v.numpy() for v in model.weights]


def two_replica_difference(method, mirrored, **hyperparameters):
    """(how far the single-device steps moved the weights, max |single - two replicas|), in the
    dtype of the current policy (the tests use the `float64` fixture)."""
    initial, single = trained_weights(method, hyperparameters, tf.distribute.get_strategy())
    _, replicated = trained_weights(method, hyperparameters, mirrored)
    assert len(single) == len(replicated)
    return max_difference(initial, single), max_difference(single, replicated)


def resumed_equals_uninterrupted(build, tmp_path, steps=3):
    """`steps` train steps straight, against one step, a checkpoint (great_tf.checkpoints), a
    fresh model restored from it and the remaining steps: every weight must be equal."""
    from great_tf import checkpoints

    batches = [toy_batch(seed=30 + i) for i in range(steps)]
    straight = build()
    for batch in batches:
        straight.train_step(batch)
    first = build()
    first.train_step(batches[0])
    path = checkpoints.run_checkpoint(first).write(str(tmp_path / "ckpt"))
    resumed = build()
    checkpoints.run_checkpoint(resumed).read(path).assert_consumed()
    for batch in batches[1:]:
        resumed.train_step(batch)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
