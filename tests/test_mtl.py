import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import mtl
from great_tf.errors import GreatError
from great_tf.layers import GAL
from great_tf.mtl import EqualWeightsMTL, GradNormMTL, GreatMTL, Task, UncertaintyMTL

TASKS = (Task("c", "classification", 3), Task("r", "regression", 1))
LR = 0.1


def toy_network(seed=0, encoder_units=2, conv=False):
    """A linear encoder x -> x W and bias-free linear heads: every gradient has a closed form."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    encoder = keras.Model(inputs, keras.layers.Dense(encoder_units, use_bias=False, name="W")(inputs))
    decoders = {}
    for task in TASKS:
        feature = keras.Input((encoder_units,))
        decoders[task.name] = keras.Model(
            feature, keras.layers.Dense(task.units, use_bias=False, name=f"V_{task.name}")(feature))
    return encoder, decoders


def toy_batch(seed=1, n=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = {"c": rng.integers(0, 3, n).astype(np.int32), "r": rng.normal(size=(n, 1)).astype(np.float32)}
    return x, y


def sgd():
    return keras.optimizers.SGD(LR)


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


# --- hand formulas for the linear toy ------------------------------------------------------
def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def toy_losses_and_grads(W, V, x, y):
    """Each task's mean loss J_i and its gradients dJ_i/dW and dJ_i/dV_i, by hand."""
    n = len(x)
    f = x @ W
    p = softmax(f @ V["c"])
    onehot = np.eye(3)[y["c"]]
    J_c = -np.mean(np.log(p[np.arange(n), y["c"]]))
    d_logits = (p - onehot) / n
    residual = f @ V["r"] - y["r"]
    J_r = np.mean(residual**2)
    d_out = 2 * residual / n
    grads_W = {"c": x.T @ (d_logits @ V["c"].T), "r": x.T @ (d_out @ V["r"].T)}
    grads_V = {"c": f.T @ d_logits, "r": f.T @ d_out}
    return {"c": J_c, "r": J_r}, grads_W, grads_V


def toy_weights(model):
    return model.encoder.trainable_variables[0].numpy(), {
        t: model.decoders[t].trainable_variables[0].numpy() for t in ("c", "r")}


# --- tests ---------------------------------------------------------------------------------
def test_equal_weights_step_is_plain_sgd_on_the_sum_of_losses():
    encoder, decoders = toy_network()
    model = EqualWeightsMTL(encoder, decoders, TASKS)
    model.compile(sgd())
    x, y = toy_batch()
    W, V = toy_weights(model)
    J, gW, gV = toy_losses_and_grads(W, V, x, y)
    logs = model.train_step((x, y))
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                               W - LR * (gW["c"] + gW["r"]), rtol=1e-5, atol=1e-7)
    for t in ("c", "r"):
        np.testing.assert_allclose(model.decoders[t].trainable_variables[0].numpy(),
                                   V[t] - LR * gV[t], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(logs["loss"]), J["c"] + J["r"], rtol=1e-5)


def test_uncertainty_step_matches_kendall_by_hand():
    encoder, decoders = toy_network()
    model = UncertaintyMTL(encoder, decoders, TASKS)
    model.compile(sgd(), weight_optimizer=sgd())
    s = np.array([0.3, -0.4], np.float32)
    model.task_weights.values.assign(s)
    x, y = toy_batch()
    W, V = toy_weights(model)
    J, gW, _ = toy_losses_and_grads(W, V, x, y)
    factors = np.array([1.0, 0.5])  # 1/sigma^2 for classification, 1/(2 sigma^2) for regression
    weights = factors * np.exp(-s)
    normalized = weights / weights.sum()
    model.train_step((x, y))
    expected_s = s - LR * (-factors * np.exp(-s) * np.array([J["c"], J["r"]]) + 0.5)
    np.testing.assert_allclose(model.task_weights.values.numpy(), expected_s, rtol=1e-5)
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                               W - LR * (normalized[0] * gW["c"] + normalized[1] * gW["r"]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.normalized_weights().numpy().sum(), 1.0, rtol=1e-6)


def test_gradnorm_step_matches_chen_et_al_by_hand():
    encoder, decoders = toy_network()
    model = GradNormMTL(encoder, decoders, TASKS, alpha=0.6)
    model.compile(sgd(), weight_optimizer=sgd())
    assert model.shared_kernel is model.encoder.trainable_variables[0]
    w = np.array([1.4, 0.6], np.float32)
    model.task_weights.values.assign(w)
    x, y = toy_batch()
    W, V = toy_weights(model)
    J, gW, _ = toy_losses_and_grads(W, V, x, y)
    initial = np.array([2.0 * J["c"], 0.5 * J["r"]], np.float32)  # unequal training rates
    model.initial_losses.values.assign(initial)
    model.initial_losses.seen.assign(1.0)
    model.train_step((x, y))

    norms = np.array([np.linalg.norm(gW["c"]), np.linalg.norm(gW["r"])])
    G = w * norms
    ratios = np.array([J["c"], J["r"]]) / initial
    target = G.mean() * (ratios / ratios.mean()) ** 0.6
    w_new = w - LR * np.sign(G - target) * norms
    w_new = 2 * w_new / w_new.sum()
    np.testing.assert_allclose(model.task_weights.values.numpy(), w_new, rtol=1e-5)
    np.testing.assert_allclose(model.task_weights.values.numpy().sum(), 2.0, rtol=1e-6)
    np.testing.assert_allclose(model.encoder.trainable_variables[0].numpy(),
                               W - LR * (w[0] * gW["c"] + w[1] * gW["r"]), rtol=1e-5, atol=1e-7)


def small_classifier(feature_units, num_tasks, seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((feature_units,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_tasks)(hidden))


def expected_great_step(model, gammas, x, y):
    """Algorithm 3 computed independently: one tape per task, no GAL layers, plain SGD."""
    n = len(x)
    enc_vars = model.encoder.trainable_variables
    task_grads, dec_updates, losses = [], {}, []
    for i, task in enumerate(TASKS):
        with tf.GradientTape(persistent=True) as tape:
            f = model.encoder(x, training=True)
            out = model.decoders[task.name](f, training=True)
            J = tf.reduce_mean(task.per_example_loss(y[task.name], out))
            C = J / tf.stop_gradient(J)  # the first step's loss is C_i^0
        g = tape.gradient(C, f)
        dec_vars = model.decoders[task.name].trainable_variables
        dec_updates[task.name] = [v.numpy() - LR * d.numpy() for v, d in zip(dec_vars, tape.gradient(C, dec_vars))]
        task_grads.append(g)
        losses.append(float(J))
    with tf.GradientTape() as tape:
        f = model.encoder(x, training=True)
    encoder_grad = tape.gradient(f, enc_vars, output_gradients=gammas[0] * task_grads[0] + gammas[1] * task_grads[1])
    enc_updates = [v.numpy() - LR * d.numpy() for v, d in zip(enc_vars, encoder_grad)]

    gamma_vars = [tf.Variable(g) for g in gammas]
    clf_vars = model.classifier.trainable_variables
    with tf.GradientTape() as tape:
        inputs = tf.concat([gv * (n * g) for gv, g in zip(gamma_vars, task_grads)], 0)
        labels = tf.constant([0] * n + [1] * n)
        clf_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=model.classifier(inputs, training=True)))
    grads = tape.gradient(clf_loss, clf_vars + gamma_vars)
    clf_updates = [v.numpy() - LR * d.numpy() for v, d in zip(clf_vars, grads[: len(clf_vars)])]
    gamma_updates = [np.maximum(g + LR * d.numpy(), 1e-3) for g, d in zip(gammas, grads[len(clf_vars):])]
    return enc_updates, dec_updates, clf_updates, gamma_updates, losses


def test_great_step_matches_algorithm_3_computed_independently():
    encoder, decoders = toy_network(encoder_units=4)
    model = GreatMTL(encoder, decoders, TASKS, classifier=small_classifier(4, 2))
    model.compile(sgd(), weight_optimizer=sgd(), classifier_optimizer=sgd())
    rng = np.random.default_rng(7)
    gammas = [rng.uniform(0.5, 1.5, 4).astype(np.float32) for _ in TASKS]
    for gal, gamma in zip(model.gals.values(), gammas):
        gal.gamma.assign(gamma)
    x, y = toy_batch()
    enc, dec, clf, gam, losses = expected_great_step(model, gammas, x, y)
    model.train_step((x, y))

    for v, e in zip(model.encoder.trainable_variables, enc):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7)
    for t in ("c", "r"):
        for v, e in zip(model.decoders[t].trainable_variables, dec[t]):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7)
    for v, e in zip(model.classifier.trainable_variables, clf):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7)
    for gal, e, before in zip(model.gals.values(), gam, gammas):
        np.testing.assert_allclose(gal.gamma.numpy(), e, rtol=1e-5, atol=1e-7)
        assert not np.allclose(gal.gamma.numpy(), before)
    np.testing.assert_allclose(model.initial_losses.values.numpy(), losses, rtol=1e-5)


def test_great_step_updates_every_trainable_variable_and_keeps_initial_losses():
    encoder, decoders = toy_network(encoder_units=4)
    model = GreatMTL(encoder, decoders, TASKS, classifier=small_classifier(4, 2))
    model.compile(sgd(), weight_optimizer=sgd(), classifier_optimizer=sgd())
    before = snapshot(model.trainable_variables)
    x, y = toy_batch()
    model.train_step((x, y))
    first = model.initial_losses.values.numpy().copy()
    model.train_step(toy_batch(seed=9))
    after = snapshot(model.trainable_variables)
    unchanged = [v.path for v, a, b in zip(model.trainable_variables, after, before) if np.array_equal(a, b)]
    assert unchanged == []
    np.testing.assert_array_equal(model.initial_losses.values.numpy(), first)


def test_great_outputs_do_not_depend_on_gal_weights():
    encoder, decoders = toy_network(encoder_units=4)
    model = GreatMTL(encoder, decoders, TASKS, classifier=small_classifier(4, 2))
    x, _ = toy_batch()
    before = {k: v.numpy() for k, v in model(x).items()}
    for gal in model.gals.values():
        gal.gamma.assign(np.full(4, 3.0, np.float32))
    for k, v in model(x).items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def user_model_with_gals():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    feature = keras.layers.Dense(4, activation="tanh", name="shared")(inputs)
    out_c = keras.layers.Dense(3, name="head_c")(GAL(name="gal_c")(feature))
    out_r = keras.layers.Dense(1, name="head_r")(GAL(name="gal_r")(feature))
    return keras.Model(inputs, {"c": out_c, "r": out_r})  # outputs named after their tasks


def test_great_trains_a_users_functional_model_with_gal_layers():
    user = user_model_with_gals()
    model = GreatMTL.from_functional(user, TASKS, classifier=small_classifier(4, 2))
    model.compile(sgd(), weight_optimizer=sgd(), classifier_optimizer=sgd())
    x, y = toy_batch()
    outputs = model(x)
    user_c, user_r = user(x)["c"], user(x)["r"]
    np.testing.assert_allclose(outputs["c"].numpy(), user_c.numpy(), rtol=1e-6)
    np.testing.assert_allclose(outputs["r"].numpy(), user_r.numpy(), rtol=1e-6)
    shared_before = user.get_layer("shared").kernel.numpy().copy()
    model.train_step((x, y))
    assert not np.allclose(user.get_layer("gal_c").gamma.numpy(), 1.0)
    assert not np.allclose(user.get_layer("shared").kernel.numpy(), shared_before)


def test_from_functional_rejects_a_model_without_one_gal_per_task():
    inputs = keras.Input((3,))
    user = keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(1)(inputs)])
    with pytest.raises(GreatError, match="GAL"):
        GreatMTL.from_functional(user, TASKS)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(GreatError, match="unknown method 'magic'.*great"):
        mtl.build_mtl_model("magic", width=4)


def test_task_gradients_are_per_example_and_independent_of_batch_size():
    model = mtl.build_mtl_model("equal", input_shape=(8, 8, 1), width=4,
                                tasks=(Task("class", "classification", 10), Task("auto", "regression", 1)))
    rng = np.random.default_rng(0)
    x = rng.random((8, 8, 8, 1)).astype(np.float32)
    y = {"class": rng.integers(0, 10, 8).astype(np.int32), "auto": x}
    full = model.task_gradients(x, y)
    half = model.task_gradients(x[:4], {k: v[:4] for k, v in y.items()})
    for g_full, g_half in zip(full, half):
        np.testing.assert_allclose(g_full.numpy()[:4], g_half.numpy(), rtol=1e-4, atol=1e-7)


# -- a Keras user's multi-task model: tasks, outputs by name, targets, compile ---------------------

def test_tasks_meet_the_outputs_named_after_them_in_any_order():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    feature = keras.layers.Dense(4, activation="tanh", name="shared")(inputs)
    out_r = keras.layers.Dense(1, name="r")(GAL(name="gal_r")(feature))  # listed first
    out_c = keras.layers.Dense(3, name="c")(GAL(name="gal_c")(feature))
    user = keras.Model(inputs, [out_r, out_c])
    model = GreatMTL.from_functional(user, TASKS, classifier=small_classifier(4, 2))
    x, _ = toy_batch()
    user_r, user_c = user(x)
    np.testing.assert_allclose(model(x)["c"].numpy(), user_c.numpy(), rtol=1e-6)
    np.testing.assert_allclose(model(x)["r"].numpy(), user_r.numpy(), rtol=1e-6)
    assert model.gals["c"] is user.get_layer("gal_c") and model.gals["r"] is user.get_layer("gal_r")


def test_a_task_without_an_output_of_its_name_is_a_one_line_error():
    user = user_model_with_gals()
    renamed = keras.Model(user.inputs, [user.outputs[0], user.outputs[1]])  # layer names head_c, head_r
    with pytest.raises(GreatError, match="no output named 'c' for task 'c': its outputs are 'head_c', 'head_r'"):
        GreatMTL.from_functional(renamed, TASKS)


def test_a_one_class_task_and_an_unknown_kind_are_refused():
    with pytest.raises(GreatError, match="segmentation task 'gray' has 1 class: give units=2"):
        Task("gray", "segmentation", 1)
    with pytest.raises(GreatError, match="classification task 'c' has 1 class"):
        Task("c", "classification", 1)
    with pytest.raises(GreatError, match="kind 'segmentaton': use one of classification, segmentation"):
        Task("gray", "segmentaton", 2)


def test_segmentation_is_the_per_pixel_cross_entropy_and_pixel_error():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 3, 4)).astype(np.int32)
    task = Task("seg", "segmentation", 3)
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0].mean(axis=(1, 2))
    np.testing.assert_allclose(task.per_example_loss(labels, logits).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(task.per_example_loss(labels[..., None], logits).numpy(), expected, rtol=1e-5)
    (error,) = task.make_metrics()
    error.update_state(labels, logits)
    assert float(error.result()) == pytest.approx(100.0 * np.mean(logits.argmax(-1) != labels), rel=1e-5)


def test_targets_may_be_a_list_in_task_order_and_a_wrong_key_names_the_tasks():
    x, y = toy_batch()
    for targets in ([y["c"], y["r"]], (y["c"], y["r"])):
        encoder, decoders = toy_network()
        model = EqualWeightsMTL(encoder, decoders, TASKS)
        model.compile(sgd())
        history = model.fit(x, targets, batch_size=6, epochs=1, verbose=0, shuffle=False)
        encoder, decoders = toy_network()
        reference = EqualWeightsMTL(encoder, decoders, TASKS)
        reference.compile(sgd())
        expected = reference.fit(x, y, batch_size=6, epochs=1, verbose=0, shuffle=False)
        assert history.history["c_loss"] == pytest.approx(expected.history["c_loss"])
        np.testing.assert_allclose(model.encoder.get_weights()[0], reference.encoder.get_weights()[0])
    with pytest.raises(GreatError, match="the targets have no 'r': their keys are 'c', 'rr', the tasks are c, r"):
        model.fit(x, {"c": y["c"], "rr": y["r"]}, batch_size=6, epochs=1, verbose=0)
    with pytest.raises(GreatError, match="got 1 targets for the 2 tasks c, r"):
        model.fit(x, [y["c"]], batch_size=6, epochs=1, verbose=0)


def test_keras_losses_weights_and_metrics_are_refused_by_a_multi_task_model():
    encoder, decoders = toy_network()
    model = GreatMTL(encoder, decoders, TASKS, classifier=small_classifier(2, 2))
    with pytest.raises(GreatError, match="does not use loss, loss_weights, metrics: a task's loss and "
                                         "metrics are its Task's"):
        model.compile("adam", loss={"c": "mse"}, loss_weights={"c": 2.0}, metrics=["mae"])


def test_great_builds_its_task_classifier_over_a_vector_feature():
    encoder, decoders = toy_network(encoder_units=4)
    model = mtl.build_method("great", encoder, decoders, TASKS)
    model.compile(sgd())
    x, y = toy_batch()
    before = model.classifier.get_weights()
    model.train_step((x, y))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.classifier.get_weights()))
    assert model.classifier.output.shape[-1] == 2
