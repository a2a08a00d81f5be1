"""The GREAT/GREACE defense step: GREACE's gradient, the full step against finite differences,
FGSM adversarial training's loss, the alpha/beta schedules, and every mode's train step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf.defense import MODES, GreatDefense, build_defense, build_networks, greace_surrogate
from great_tf.errors import GreatError
from great_tf.schedules import PolyRamp, poly_multiplier


def test_greace_gradient_at_logits_is_eq6():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(5, 4)), tf.float64)
    aux_logits = tf.constant(rng.normal(size=(5, 4)), tf.float64)
    y = np.array([0, 3, 1, 1, 2])
    beta = 1.7
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([logits, aux_logits])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        total = tf.reduce_sum(ce + greace_surrogate(y, logits, tf.nn.softmax(aux_logits), beta))
    onehot = np.eye(4)[y]
    expected = (tf.nn.softmax(logits).numpy() - onehot
                + beta * tf.nn.softmax(aux_logits).numpy() * (1.0 - onehot))
    np.testing.assert_allclose(tape.gradient(total, logits).numpy(), expected, rtol=1e-12, atol=1e-14)
    # softmax(á) is a constant: GREACE sends nothing to the auxiliary network.
    assert tape.gradient(total, aux_logits) is None


def test_the_models_greace_term_uses_the_auxiliary_probabilities_once():
    """The step's GREACE term against beta * sum_{j != y} softmax(á)_j * a_j from its own outputs
    (fails if the auxiliary logits go through softmax twice, or not at all)."""
    keras.utils.set_random_seed(0)
    main, aux = build_networks((8, 8, 3), 3, width=2)
    model = GreatDefense(main, aux, "great+ce", alpha=0.5, beta=1.3)
    x = tf.random.stateless_uniform([4, 8, 8, 3], [2, 3])
    y = tf.constant([0, 1, 2, 1])
    out = model.great_losses(x, y, tf.constant(0.5), tf.constant(1.3))
    probs = tf.nn.softmax(out["aux_logits"]).numpy()
    logits = out["logits"].numpy()
    negatives = 1.0 - np.eye(3)[y.numpy()]
    expected = 1.3 * np.sum(probs * negatives * logits) / 4
    np.testing.assert_allclose(float(out["greace"]), expected, rtol=1e-5)


def flat(tensors):
    return np.concatenate([np.ravel(np.asarray(t)) for t in tensors])


def shift(variables, direction, h):
    """Adds h * direction (a flat vector) to the variables in place."""
    offset = 0
    for v in variables:
        n = int(np.prod(v.shape))
        v.assign_add(h * direction[offset:offset + n].reshape(v.shape))
        offset += n


def smooth_net(name, act="tanh"):
    """Conv -> synchronized BN -> tanh, twice, pooling, linear: the defense's layer types with a
    smooth activation. With ReLU the input gradient g jumps whenever a unit changes sign, so F
    below is not differentiable at the finite-difference scale; the step's code does not depend
    on the activation."""
    from great_tf.models import batch_norm

    inputs = keras.Input((6, 6, 2))
    x = inputs
    for i, (filters, strides) in enumerate(((3, 1), (4, 2))):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same")(x)
        x = batch_norm()(x)
        x = keras.layers.Activation(act)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)


@pytest.mark.parametrize("mode", ["great+ce", "great"])
def test_great_step_gradient_matches_finite_differences(float64, mode):
    """dF/dtheta of the whole step, F = CE + GREACE - alpha * C'(aux(g(theta))), in float64 through
    synchronized BN in training mode, against central differences along random directions; and the
    auxiliary's gradient against differences of C'."""
    tf.keras.utils.set_random_seed(3)
    main, aux = smooth_net("main"), smooth_net("aux", "softplus")
    model = GreatDefense(main, aux, mode, alpha=0.7, beta=1.3)
    model.compile(optimizer="adam", aux_optimizer="adam")
    x = tf.random.stateless_uniform([4, 6, 6, 2], [1, 1], dtype=tf.float64)
    y = tf.constant([0, 1, 2, 1])
    main_grads, aux_grads, out = model.great_gradients(x, y)
    probs = tf.nn.softmax(out["aux_logits"])  # GREACE's constants, frozen for the differences

    def objective():
        losses = model.great_losses(x, y, tf.constant(0.7, tf.float64), tf.constant(1.3, tf.float64),
                                    aux_probs=probs, reverse=False)
        return float(losses["ce"] + losses["greace"] + losses["aux"])

    def aux_objective():  # the auxiliary descends its own loss C' (a global-batch mean)
        losses = model.great_losses(x, y, tf.constant(0.7, tf.float64), tf.constant(1.3, tf.float64))
        return float(tf.reduce_mean(losses["aux_per_example"]))

    # The reversed term makes F strongly curved at this tiny width (the auxiliary's BN normalises
    # the small g): a fourth-order central stencil keeps the truncation error far below 1e-6.
    rng = np.random.default_rng(0)
    h = 1e-6
    for variables, grads, fn in ((main.trainable_variables, main_grads, objective),
                                 (aux.trainable_variables, aux_grads, aux_objective)):
        analytic = flat(grads)
        for _ in range(2):
            d = rng.normal(size=analytic.shape)
            values = {}
            for k in (2, 1, -1, -2):
                shift(variables, d, k * h)
                values[k] = fn()
                shift(variables, d, -k * h)
            numeric = (-values[2] + 8 * values[1] - 8 * values[-1] + values[-2]) / (12 * h)
            assert abs(numeric - analytic @ d) <= 1e-6 * max(1.0, abs(numeric)), (numeric, analytic @ d)
    # The reversed auxiliary term is really in the main gradient (the check is not vacuous):
    # dropping it changes the gradient.
    with tf.GradientTape() as tape:
        losses = model.great_losses(x, y, tf.constant(0.7, tf.float64), tf.constant(1.3, tf.float64))
        no_reversal = losses["ce"] + losses["greace"]
    assert not np.allclose(flat(tape.gradient(no_reversal, main.trainable_variables)), flat(main_grads))


def test_adversarial_mode_loss_is_mean_of_clean_and_fgsm():
    tf.keras.utils.set_random_seed(0)
    model = build_defense("adversarial", (8, 8, 3), 3, width=4, fgsm_eps=0.2)
    x = tf.random.stateless_uniform([4, 8, 8, 3], [2, 2])
    y = tf.constant([0, 1, 2, 0])
    with tf.GradientTape() as tape:  # the FGSM example by hand, from an inference-mode forward
        tape.watch(x)
        clean = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model.main(x, training=False)))
    x_adv = tf.clip_by_value(x + 0.2 * tf.sign(tape.gradient(clean, x)), 0.0, 1.0)
    grads, out = model.adversarial_gradients(x, y)
    with tf.GradientTape() as tape:  # one training-mode forward over the clean and FGSM examples
        both = model.main(tf.concat([x, x_adv], 0), training=True)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.concat([y, y], 0), both)
        total = 0.5 * (tf.reduce_mean(ce[:4]) + tf.reduce_mean(ce[4:]))
    expected = tape.gradient(total, model.main.trainable_variables)
    np.testing.assert_allclose(out["adv_per_example"].numpy(), ce[4:].numpy(), rtol=1e-5)
    np.testing.assert_allclose(flat(grads), flat(expected), rtol=1e-4, atol=1e-6)
    # Separate clean and adversarial forwards give other BatchNorm statistics, hence other
    # gradients: the joint batch is what is tested here.
    with tf.GradientTape() as tape:
        separate = 0.5 * (tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model.main(x, training=True)))
                          + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, model.main(x_adv, training=True))))
    assert not np.allclose(flat(tape.gradient(separate, model.main.trainable_variables)), flat(grads), rtol=1e-3)


def test_adversarial_training_keeps_moving_statistics_of_mixed_batches():
    """The FGSM direction's forward is in inference mode: after a step, the moving mean of the
    first BatchNorm equals one momentum update with the statistics of the joint batch alone."""
    tf.keras.utils.set_random_seed(0)
    model = build_defense("adversarial", (8, 8, 3), 3, width=4, fgsm_eps=0.2)
    x = tf.random.stateless_uniform([4, 8, 8, 3], [3, 3])
    y = tf.constant([0, 1, 2, 0])
    bn = next(layer for layer in model.main._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization))
    before = bn.moving_mean.numpy().copy()
    clean_only = [v.numpy().copy() for v in model.main.non_trainable_variables]
    model.adversarial_gradients(x, y)
    after = bn.moving_mean.numpy()
    assert not np.allclose(after, before)
    for v, old in zip(model.main.non_trainable_variables, clean_only):
        v.assign(old)
    x_adv = model.defense_mode.fgsm_examples(model, x, y)
    model.main(tf.concat([x, x_adv], 0), training=True)  # the one update the step should have made
    np.testing.assert_allclose(after, bn.moving_mean.numpy(), rtol=1e-5, atol=1e-7)


def test_poly_ramp_is_max_times_one_minus_lr_multiplier():
    ramp = PolyRamp(2.0, steps_per_epoch=10, epochs=4)
    for step, epoch in ((0, 0), (9, 0), (10, 1), (35, 3)):
        expected = 2.0 * (1.0 - float(poly_multiplier(epoch, 4)))
        assert float(ramp(step)) == pytest.approx(expected, rel=1e-6)
    assert float(ramp(0)) == 0.0
    restored = PolyRamp.from_config(ramp.get_config())
    assert float(restored(25)) == pytest.approx(float(ramp(25)))


def test_modes_use_alpha_and_beta_as_documented():
    model = build_defense("greace", (8, 8, 3), 3, width=2, steps_per_epoch=1, epochs=2, beta_max=10.0)
    model.optimizer.iterations.assign(1)  # epoch 1 of 2: multiplier 0.5^0.9
    assert float(model.current_alpha()) == 0.0
    assert float(model.current_beta()) == pytest.approx(10 * (1 - 0.5 ** 0.9), rel=1e-6)
    great = build_defense("great", (8, 8, 3), 3, width=2, steps_per_epoch=1, epochs=2)
    great.optimizer.iterations.assign(1)
    assert float(great.current_beta()) == 0.0
    assert float(great.current_alpha()) == pytest.approx(1 - 0.5 ** 0.9, rel=1e-6)
    assert build_defense("baseline", (8, 8, 3), 3, width=2).auxiliary is None


def test_unknown_mode_and_missing_auxiliary_are_one_line_errors():
    main, _ = build_networks((8, 8, 3), 3, width=2)
    with pytest.raises(GreatError, match="unknown defense mode"):
        GreatDefense(main, mode="fgsm")
    with pytest.raises(GreatError, match="needs an auxiliary"):
        GreatDefense(main, mode="great")


def test_every_mode_trains_under_a_distribution_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x = np.random.default_rng(0).random((8, 6, 6, 2), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
    for mode in MODES:
        with strategy.scope():
            aux = smooth_net("aux", "relu") if GreatDefense.needs_auxiliary(mode) else None
            model = GreatDefense(smooth_net("main", "relu"), aux, mode,
                                 alpha=PolyRamp(1.0, 2, 2), beta=PolyRamp(2.0, 2, 2))
            model.compile(optimizer="adam", aux_optimizer="adam" if aux is not None else None)
        before = [v.numpy().copy() for v in model.main.trainable_variables]
        history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        assert np.all(np.isfinite(history.history["loss"]))
        assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.main.trainable_variables))
        if model.auxiliary is not None:
            assert {"aux_loss", "aux_accuracy", "alpha", "beta"} <= set(history.history)
            # Epoch 0 has alpha = beta = 0; epoch 1 has them ramped up for the modes that use them.
            assert (history.history["alpha"][1] > 0) == (mode in ("great", "great+ce"))
            assert (history.history["beta"][1] > 0) == (mode in ("greace", "great+ce"))
        if mode == "adversarial":
            assert "adv_accuracy" in history.history


# -- a Keras user's defense: schedules, compile, networks ------------------------------------------

def tiny_images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 3), dtype=np.float32), (np.arange(n) % 3).astype(np.int32)


class WeightsPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([v.numpy().copy() for v in self.model.main.trainable_variables])


def test_a_defense_built_without_a_schedule_trains_at_its_base_rate_in_every_epoch():
    keras.utils.set_random_seed(0)
    model = build_defense("baseline", (8, 8, 3), 3, width=2)
    x, y = tiny_images()
    weights = WeightsPerEpoch()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[weights])
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert any(not np.allclose(a, b) for a, b in zip(*weights.epochs))  # epoch 2 trained too


def test_without_a_schedule_alpha_and_beta_are_their_maxima_from_the_first_step():
    model = build_defense("great+ce", (8, 8, 3), 3, width=2, alpha_max=0.7, beta_max=3.0)
    for step in (0, 10_000):
        model.optimizer.iterations.assign(step)
        assert float(model.current_alpha()) == pytest.approx(0.7)
        assert float(model.current_beta()) == pytest.approx(3.0)
    with pytest.raises(GreatError, match="give both steps_per_epoch and epochs"):
        build_defense("baseline", (8, 8, 3), 3, width=2, epochs=3)


def test_fitting_past_the_end_of_the_learning_rate_schedule_is_refused():
    model = build_defense("baseline", (8, 8, 3), 3, width=2, steps_per_epoch=2, epochs=1)
    x, y = tiny_images()
    with pytest.raises(GreatError, match="is 0 from step 2 on: build the schedule"):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # the schedule's own length runs


def test_a_ramp_that_stays_zero_through_the_whole_fit_warns():
    model = build_defense("greace", (8, 8, 3), 3, width=2, steps_per_epoch=2, epochs=3)
    x, y = tiny_images()
    with pytest.warns(UserWarning, match="beta is 0 through this whole fit.*trains like the baseline"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)


@pytest.mark.parametrize("argument", [{"loss": "sparse_categorical_crossentropy"},
                                      {"metrics": ["accuracy"]}, {"loss_weights": [1.0]}])
def test_keras_compile_arguments_the_step_does_not_read_are_refused(argument):
    main, aux = build_networks((8, 8, 3), 3, width=2)
    model = GreatDefense(main, aux, "great+ce")
    with pytest.raises(GreatError, match=f"does not use {next(iter(argument))}: the losses are the mode's"):
        model.compile(optimizer="adam", **argument)


def users_main_network(normalization):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = normalization()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(3)(x), name="mine")


def test_keras_batch_norm_under_the_double_backprop_is_refused():
    from great_tf.models import ExactBatchNorm

    _, aux = build_networks((8, 8, 3), 3, width=2)
    keras_bn = users_main_network(keras.layers.BatchNormalization)
    for mode in ("great", "great+ce"):
        with pytest.raises(GreatError, match="main network 'mine' has keras.layers.BatchNormalization.*"
                                             "use great_tf.models.ExactBatchNorm"):
            GreatDefense(keras_bn, aux, mode)
    GreatDefense(keras_bn, aux, "greace")  # no double backprop: its first derivatives are right
    GreatDefense(keras_bn, mode="baseline")
    GreatDefense(users_main_network(ExactBatchNorm), aux, "great+ce")
    GreatDefense(users_main_network(lambda: keras.layers.BatchNormalization(synchronized=True)), aux, "great")


def test_an_auxiliary_network_without_one_logit_per_class_is_refused():
    main, _ = build_networks((8, 8, 3), 3, width=2)
    inputs = keras.Input((8, 8, 3))
    one_unit = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)), name="aux1")
    with pytest.raises(GreatError, match="'aux1' has 1 outputs: it needs one logit per class, 3"):
        GreatDefense(main, one_unit, "great+ce")
