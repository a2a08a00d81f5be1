"""What a multi-task step costs under a strategy, counted on its traced graph (great_tf/step_costs.py),
and the cuts: no encoder walk for decoder-only gradients, one pass through the decoders for the
gradient-combining methods, no broadcast of the first-batch losses, no symbolic forward pass at
every `fit` call."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import mtl
from great_tf.step_costs import cross_replica_costs, encoder_backward_passes
from tests.test_mtl_methods import DIST_TASKS, SIZE, batches, sgd


def network(tasks):
    """conv - exact BatchNorm - ReLU as the encoder; each decoder a 1x1 convolution and an exact
    BatchNorm before its head: B = 3 BatchNorm layers, one in the encoder."""
    from great_tf.mtl.network import tiny_multitask_network

    return tiny_multitask_network((SIZE, SIZE, 1), tasks, decoder_channels=2)


def build(method, strategy=None, **hyperparameters):
    """`method` on `network`; GREAT's task classifier a pooled linear layer (no BatchNorm)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder, decoders = network(DIST_TASKS)
        if method == "great":
            feature = keras.Input(encoder.output.shape[1:])
            pooled = keras.layers.GlobalAveragePooling2D()(feature)
            logits = keras.layers.Dense(len(DIST_TASKS))(pooled)
            hyperparameters["classifier"] = keras.Model(feature, logits)
        model = mtl.build_method(method, encoder, decoders, DIST_TASKS, **hyperparameters)
        model.compile(optimizer=sgd(), **{name: sgd() for name in model.optimizer_variables()})
    return model


def one_batch():
    x, y = batches(1)
    return tf.constant(x[0], tf.float32), {k: tf.constant(v[0]) for k, v in y.items()}


def single_device_graph(model):
    return tf.function(model.train_step).get_concrete_function(one_batch()).graph


# All-reduces by hand. A BatchNorm layer's forward pass sums twice (mean, then the centred
# variance), each backward pass through it once; B = 3 layers (encoder 1, decoders 1 each), T = 2.
@pytest.mark.parametrize("method, hyperparameters, batch_norm, gradients, own, passes, broadcasts", [
    # one backward pass; one optimizer
    ("equal", {}, 2 * 3 + 3, 1, 0, 1, 1),
    # one pass through the decoders (the heads' gradients and the decoders' own, together), then
    # T from the feature to the encoder; the T x P task gradients summed once
    ("pcgrad", {}, 2 * 3 + 2 + 2, 1, 1, 2, 1),
    # the same with the decoders' gradients weighted (Nash-MTL's alpha): no second pass
    ("nashmtl", {}, 2 * 3 + 2 + 2, 1, 1, 2, 2),
    # one pass through the decoders, one through the encoder (the combination at the feature);
    # the T x T Gram matrix summed once
    ("pcgrad", {"space": "feature"}, 2 * 3 + 2 + 1, 1, 1, 1, 1),
    # one backward pass, then T walks from the feature to the last kernel; the T kernel gradients
    # and the T losses in one all-reduce; two optimizers; broadcasts: the optimizers' step
    # counters and the renormalised weights, not the first-batch losses
    ("gradnorm", {}, 2 * 3 + 3 + 2, 2, 1, 1 + 2, 3),
    # one backward pass; the losses summed once; network, GAL and classifier optimizers
    ("great", {}, 2 * 3 + 3, 3, 1, 1, 3),
])
def test_all_reduces_and_backward_passes_per_step_by_hand(method, hyperparameters, batch_norm, gradients,
                                                          own, passes, broadcasts, mirrored):
    costs = cross_replica_costs(build(method, mirrored, **hyperparameters), one_batch(), mirrored)
    # The collective ops in the graph and the all-reduce calls by source are two measurements.
    assert costs.by_source == {"batch norm": batch_norm, "gradients": gradients, "method": own}
    assert costs.all_reduces == batch_norm + gradients + own
    assert costs.broadcasts == broadcasts
    model = build(method, **hyperparameters)
    assert encoder_backward_passes(model, single_device_graph(model)) == passes


def test_one_replica_has_no_collectives():
    costs = cross_replica_costs(build("equal"), one_batch(), tf.distribute.get_strategy())
    assert costs.all_reduces == 0


def test_decoder_only_gradients_equal_the_full_tapes():
    """`step_gradient` answers on the decoders' tape exactly what the full tape answers."""
    model = build("equal")
    x, y = one_batch()
    with tf.GradientTape(persistent=True) as tape:
        feature = model.encoder(x, training=True)
        with tf.GradientTape(persistent=True) as decoder_tape:
            decoder_tape.watch(feature)
            heads, outputs = model.decode(feature, training=True)
            losses = model.replica_losses(model.per_example_losses(y, outputs), tf.constant(4.0))
    step = mtl.Step(tape, feature, heads, outputs, None, losses, tf.constant(4.0),
                    decoder_tape=decoder_tape)
    for sources in (heads, model.task_variables, heads + model.task_variables):
        ours = model.step_gradient(step, losses, sources)
        full = tape.gradient(losses, sources)
        for a, b in zip(ours, full):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert all(g is not None for g in model.step_gradient(step, losses, model.network_variables))


@pytest.mark.parametrize("method", ["great", "gradnorm"])
def test_every_replica_holds_the_same_first_batch_losses(method, mirrored, float64):
    """InitialLosses is written by each replica into its own copy (no broadcast): the copies
    must agree, and with the single device's values."""
    values = {}
    for name, strategy in (("one", tf.distribute.get_strategy()), ("two", mirrored)):
        model = build(method, strategy)
        data = tf.data.Dataset.from_tensor_slices(batches(2))
        model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
        values[name] = model.initial_losses.values
    copies = [v.numpy() for v in mirrored.experimental_local_results(values["two"].value)]
    assert len(copies) == 2 and np.array_equal(copies[0], copies[1])
    np.testing.assert_allclose(copies[0], values["one"].numpy(), rtol=1e-12)
    assert np.all(copies[0] > 0)


@pytest.mark.parametrize("method", mtl.available_methods())
def test_no_layer_is_left_unbuilt_after_compile(method):
    model = build(method)
    assert [layer.name for layer in model._flatten_layers(include_self=False) if not layer.built] == []


def test_fit_under_a_strategy_runs_no_symbolic_forward_pass_after_the_first(mirrored, monkeypatch):
    """Keras' `fit` runs a symbolic forward pass (`model.call`) at every call under a strategy
    while a layer is unbuilt: GREAT's first-batch losses were, and cost 1.3 s per `fit` and per
    `evaluate` at width 8."""
    model = build("great", mirrored)
    data = tf.data.Dataset.from_tensor_slices(batches(2))
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    calls = []
    original = type(model).call

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "call", counted)
    model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    assert calls == []
