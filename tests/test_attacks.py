"""Attacks: FGSM's formula, the eps-ball and pixel range, targeted attacks, labels, batching."""

import numpy as np
import pytest
import tensorflow as tf

from great_tf import attacks
from great_tf.errors import GreatError
from great_tf.models import resnet18


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return resnet18((8, 8, 3), 5, width=4)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((6, 8, 8, 3)).astype(np.float32)
    x[0, :2] = 0.0  # pixels at the range's ends: the clip must act
    x[1, :2] = 1.0
    return x, np.array([0, 1, 2, 3, 4, 0])


def loss_gradient(model, x, labels):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(x)))
    return tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_is_clipped_signed_gradient_step(model, data, targeted):
    x, y = data
    sign = -1.0 if targeted else 1.0
    expected = np.clip(x + sign * 0.1 * np.sign(loss_gradient(model, x, y)), 0.0, 1.0)
    x_adv = attacks.fgsm(model, x, 0.1, y=y, targeted=targeted).numpy()
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_untargeted_attack_without_y_uses_the_prediction(model, data):
    x, _ = data
    predicted = attacks.predicted_labels(model, tf.constant(x)).numpy()
    np.testing.assert_allclose(attacks.fgsm(model, x, 0.05).numpy(),
                               attacks.fgsm(model, x, 0.05, y=predicted).numpy())
    with pytest.raises(GreatError, match="targeted attack needs y"):
        attacks.fgsm(model, x, 0.05, targeted=True)


@pytest.mark.parametrize("attack", ["iterative_fgsm", "pgd", "spsa"])
def test_iterative_attacks_stay_in_the_eps_ball_and_pixel_range(model, data, attack):
    x, y = data
    kwargs = {"restarts": 2} if attack == "pgd" else {"num_samples": 4} if attack == "spsa" else {}
    x_adv = getattr(attacks, attack)(model, x, 0.05, nb_iter=4, y=y, eps_iter=0.03, **kwargs).numpy()
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() > 0.04  # it moved (not a no-op)


def target_probability(model, x, target):
    return tf.gather(tf.nn.softmax(model(tf.constant(x))), target, batch_dims=1).numpy()


@pytest.mark.parametrize("attack", ["fgsm", "iterative_fgsm", "pgd"])
def test_targeted_attacks_raise_the_targets_probability(model, data, attack):
    x, y = data
    target = attacks.random_wrong_labels(y, 5, seed=1).numpy()
    assert np.all(target != y)
    kwargs = {} if attack == "fgsm" else {"nb_iter": 5}
    x_adv = getattr(attacks, attack)(model, x, 0.02, y=target, targeted=True, **kwargs).numpy()
    before, after = target_probability(model, x, target), target_probability(model, x_adv, target)
    assert np.all(after > before), (before, after)


def test_least_likely_labels_are_the_argmin(model, data):
    x, _ = data
    logits = model(tf.constant(x)).numpy()
    worst = attacks.least_likely_labels(model, tf.constant(x)).numpy()
    np.testing.assert_array_equal(worst, logits.argmin(1))


def test_spsa_attacks_without_the_models_gradient():
    # A model whose gradient is useless (it points nowhere: the logits go through a stop-gradient)
    # defeats gradient attacks completely, but not the gradient-free SPSA.
    w = tf.constant(np.random.default_rng(1).normal(size=(12, 3)), tf.float32)

    def masked(x):
        return tf.stop_gradient(tf.matmul(tf.reshape(x, [-1, 12]), w) * 10.0)

    x = np.random.default_rng(2).random((20, 2, 2, 3)).astype(np.float32)
    y = attacks.predicted_labels(masked, tf.constant(x)).numpy()
    assert attacks.accuracy(masked, attacks.iterative_fgsm(masked, x, 0.3, y=y).numpy(), y) == 100.0
    x_adv = attacks.spsa(masked, x, 0.3, y=y, nb_iter=10, num_samples=16).numpy()
    assert attacks.accuracy(masked, x_adv, y) < 50.0


def test_batched_equals_one_batch(model, data):
    x, y = data
    whole = attacks.iterative_fgsm(model, x, 0.05, y=y, nb_iter=3).numpy()
    pieces = attacks.batched(attacks.iterative_fgsm, model, x, y, batch_size=4, eps=0.05, nb_iter=3)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_targeted_and_untargeted_attacks_of_one_model_share_a_trace(data):
    """Only the model and the shapes make an attack retrace, not its direction: the evaluation
    attacks each model untargeted and targeted, and TensorFlow warned of "frequent retracing"."""
    from great_tf.attacks.iterative_fgsm import iterate

    x, y = data
    model = dense_model(int(np.prod(x.shape[1:])), classes=5)
    flat = x.reshape(len(x), -1)
    attacks.iterative_fgsm(model, flat, 0.05, y=y, nb_iter=2)
    attacks.iterative_fgsm(model, flat, 0.05, y=(y + 1) % 5, targeted=True, nb_iter=2)
    attacks.iterative_fgsm(model, flat, 0.1, y=y, nb_iter=3, eps_iter=0.01)
    assert iterate.compiled_for(model).experimental_get_tracing_count() == 1


def test_bad_arguments_are_one_line_errors(model, data):
    x, y = data
    with pytest.raises(GreatError, match="eps must be"):
        attacks.fgsm(model, x, -0.1, y=y)
    with pytest.raises(GreatError, match="nb_iter"):
        attacks.iterative_fgsm(model, x, 0.1, nb_iter=0, y=y)
    with pytest.raises(GreatError, match="clip_min"):
        attacks.fgsm(model, x, 0.1, y=y, clip_min=1.0, clip_max=0.0)


# -- the loss convention, cleverhans' loss_fn(labels, logits) ---------------------------------------
def test_a_cleverhans_style_loss_is_not_swapped(model, data):
    # cleverhans passes loss_fn(labels=y, logits=...): TF's own cross-entropy is such a loss.
    x, y = data
    ours = attacks.fgsm(model, x, 0.1, y=y).numpy()
    theirs = attacks.fgsm(model, x, 0.1, y=y, loss_fn=tf.nn.sparse_softmax_cross_entropy_with_logits).numpy()
    np.testing.assert_array_equal(theirs, ours)


def test_a_custom_loss_gets_labels_first_then_logits():
    # loss = -z_y (labels index the logits): its input gradient is -W[:, y], whose sign we know.
    w = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)

    def linear(x):
        return tf.matmul(tf.reshape(x, [-1, 6]), w)

    def minus_true_logit(labels, logits):
        return -tf.gather(logits, labels, batch_dims=1)

    x = np.full((4, 6), 0.5, np.float32)
    y = np.array([0, 1, 2, 3])
    x_adv = attacks.fgsm(linear, x, 0.1, y=y, loss_fn=minus_true_logit).numpy()
    np.testing.assert_allclose(x_adv, x + 0.1 * np.sign(-w[:, y].T), atol=1e-7)


# -- losses -------------------------------------------------------------------------------------
def test_margin_and_dlr_losses_match_their_formulas():
    logits = np.array([[3.0, 1.0, 2.0, -1.0], [0.5, 4.0, 1.5, 1.0]], np.float32)
    y = np.array([0, 2])
    margin = np.array([2.0 - 3.0, 4.0 - 1.5])  # best other minus true
    np.testing.assert_allclose(attacks.margin_loss(y, logits).numpy(), margin, rtol=1e-6)
    spread = np.array([3.0 - 1.0, 4.0 - 1.0])  # z_pi1 - z_pi3
    np.testing.assert_allclose(attacks.dlr_loss(y, logits).numpy(), margin / spread, rtol=1e-6)
    # DLR does not change when the logits are scaled and shifted; the margin scales.
    np.testing.assert_allclose(attacks.dlr_loss(y, 50 * logits + 3).numpy(), margin / spread, rtol=1e-5)
    targets = np.array([3, 1])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = np.array([-(3.0 + 1.0) / (3.0 - 0.0), -(1.5 - 4.0) / (4.0 - 0.75)])
    np.testing.assert_allclose(attacks.targeted_dlr_loss(y, targets, logits).numpy(), expected, rtol=1e-6)


def saturated_model():
    # A linear model whose logits are multiplied by 1e4: its softmax is one-hot in float32, so the
    # cross-entropy's input gradient is exactly zero, while the margin's is not.
    w = tf.constant(np.random.default_rng(4).normal(size=(12, 3)), tf.float32)
    return lambda x: 1e4 * tf.matmul(tf.reshape(x, [-1, 12]), w)


@pytest.mark.parametrize("attack", ["fgsm", "iterative_fgsm", "pgd", "apgd"])
def test_margin_and_dlr_losses_attack_where_cross_entropy_saturates(attack):
    model = saturated_model()
    x = np.random.default_rng(5).random((16, 2, 2, 3)).astype(np.float32)
    y = attacks.predict_labels(model, x)
    fn = getattr(attacks, attack)
    with_ce = fn(model, x, 0.3, y=y).numpy()
    if attack in ("fgsm", "iterative_fgsm"):
        np.testing.assert_array_equal(with_ce, x)  # CE: no gradient, no step
    for loss in ("margin", "dlr"):
        x_adv = fn(model, x, 0.3, y=y, loss=loss).numpy()
        assert attacks.accuracy(model, x_adv, y) < attacks.accuracy(model, with_ce, y), loss


def test_unknown_loss_is_a_one_line_error(model, data):
    x, y = data
    with pytest.raises(GreatError, match="unknown loss 'hinge'"):
        attacks.fgsm(model, x, 0.1, y=y, loss="hinge")


# -- inputs: one rule for NumPy and tensors of any dtype --------------------------------------------
@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("attack", ["fgsm", "iterative_fgsm", "pgd", "spsa", "apgd", "square"])
def test_inputs_outside_the_pixel_range_are_an_error(model, attack, as_tensor):
    x = np.random.default_rng(6).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    x = tf.constant(x) if as_tensor else x
    with pytest.raises(GreatError, match=r"outside the pixel range \[clip_min, clip_max\] = \[0, 1\]"):
        getattr(attacks, attack)(model, x, 0.1, y=np.array([0, 1]))


def test_numpy_and_tensors_of_any_dtype_give_the_same_attack():
    w = tf.constant(np.random.default_rng(7).normal(size=(12, 3)), tf.float32)

    def linear(x):
        return tf.matmul(tf.reshape(x, [-1, 12]) / 255.0, w)

    pixels = np.random.default_rng(8).integers(0, 256, (5, 2, 2, 3))
    y = np.array([0, 1, 2, 0, 1])
    results = [attacks.iterative_fgsm(linear, x, 8.0, y=y, nb_iter=3, clip_max=255.0).numpy()
               for x in (pixels.astype(np.uint8), tf.constant(pixels, tf.uint8),
                         pixels.astype(np.float64), tf.constant(pixels, tf.float64),
                         tf.constant(pixels, tf.int32))]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert np.abs(results[0] - pixels).max() == pytest.approx(8.0)


# -- defects found side by side with cleverhans and ART ---------------------------------------------
def dense_model(features, classes=3, seed=9):
    w = tf.constant(np.random.default_rng(seed).normal(size=(features, classes)), tf.float32)
    return lambda x: tf.matmul(tf.reshape(x, [-1, features]), w)


def test_pgd_restarts_keep_the_shape_of_inputs_that_are_not_images():
    model = dense_model(20)
    x = np.random.default_rng(10).random((8, 20)).astype(np.float32)
    x_adv = attacks.pgd(model, x, 0.05, nb_iter=3, restarts=3).numpy()
    assert x_adv.shape == (8, 20)
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-6


def test_pgd_prefers_a_restart_that_fools_the_model_over_a_higher_loss():
    # A model without a gradient whose output depends only on where the random start lands: above
    # 0.5 it is fooled with a LOW cross-entropy, below it is right with a HIGH one.
    def model(x):
        above = tf.reshape(x, [-1, 1]) > 0.5
        fooled = tf.constant([[0.0, 0.01, -10.0]])  # class 1 predicted, CE(0) = 0.70
        right = tf.constant([[1.0, 0.99, 0.99]])  # class 0 predicted, CE(0) = 1.09
        return tf.where(above, fooled, right)

    x = np.full((20, 1, 1, 1), 0.5, np.float32)
    y = np.zeros(20, np.int64)
    x_adv = attacks.pgd(model, x, 0.5, nb_iter=1, y=y, restarts=6).numpy()
    starts_above = np.zeros(20, bool)  # did any restart of example k land above 0.5?
    for r in range(6):
        start = attacks.utils.random_start(tf.constant(x), 0.5, 0, r, tf.range(20, dtype=tf.int64)).numpy()
        starts_above |= start.reshape(-1) > 0.5
    assert 0 < starts_above.sum() < 20 or starts_above.all()
    np.testing.assert_array_equal(x_adv.reshape(-1) > 0.5, starts_above)


@pytest.mark.parametrize("shape", [(1, 8, 8, 3), (5, 12)])
def test_spsa_runs_on_a_batch_of_one_and_on_inputs_that_are_not_images(shape):
    features = int(np.prod(shape[1:]))
    model = dense_model(features)
    x = np.random.default_rng(11).random(shape).astype(np.float32)
    x_adv = attacks.spsa(model, x, 0.05, nb_iter=2, num_samples=4).numpy()
    assert x_adv.shape == shape
    assert 0.04 < np.abs(x_adv - x).max() <= 0.05 + 1e-6


@pytest.mark.parametrize("arguments, message", [({"delta": 0.0}, "delta must be positive"),
                                                ({"num_samples": 0}, "num_samples must be"),
                                                ({"nb_iter": 0}, "nb_iter must be")])
def test_spsa_degenerate_settings_are_errors_not_nan(arguments, message):
    x = np.random.default_rng(12).random((2, 12)).astype(np.float32)
    with pytest.raises(GreatError, match=message):
        attacks.spsa(dense_model(12), x, 0.05, **arguments)


def test_batched_refuses_labels_that_do_not_match_the_inputs(model, data):
    x, y = data
    with pytest.raises(GreatError, match="7 labels for 6 examples"):
        attacks.batched(attacks.fgsm, model, x, np.append(y, 0), eps=0.1)


@pytest.mark.parametrize("attack, kwargs", [
    ("pgd", {"nb_iter": 2, "restarts": 2, "eps_iter": 0.01}),  # small steps: the start shows
    ("iterative_fgsm", {"nb_iter": 2, "rand_init": True, "eps_iter": 0.01}),
    ("spsa", {"nb_iter": 2, "num_samples": 4, "eps_iter": 0.01}),
])
def test_random_attacks_do_not_depend_on_the_batch_size(attack, kwargs):
    model = dense_model(12)
    x = np.random.default_rng(13).random((6, 2, 2, 3)).astype(np.float32)
    x[3] = x[0]  # the same image at the same place of two equal-sized batches
    y = attacks.predict_labels(model, x)
    fn = getattr(attacks, attack)
    whole = fn(model, x, 0.05, y=y, **kwargs).numpy()
    pieces = attacks.batched(fn, model, x, y, batch_size=3, eps=0.05, **kwargs)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    if attack != "spsa":  # (SPSA has no random start; its directions differ, its signs may not)
        assert np.abs(pieces[0] - pieces[3]).max() > 1e-3  # different noise for different examples


def test_attacks_on_a_mixed_precision_model_follow_its_float32_twin():
    # float16 logits: the attack loss is computed in float32 and scaled before the backward pass,
    # so the gradient's signs agree with those of the same weights in float32.
    import keras

    from great_tf.precision import use_mixed_precision

    def build():
        keras.utils.set_random_seed(2)
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                                 keras.layers.Flatten(), keras.layers.Dense(5)])

    full = build()
    use_mixed_precision(True)
    try:
        mixed = build()
    finally:
        use_mixed_precision(False)
    mixed.set_weights(full.get_weights())
    x = np.random.default_rng(14).random((8, 8, 8, 3)).astype(np.float32)
    y = attacks.predict_labels(full, x)
    agree = np.mean(attacks.fgsm(mixed, x, 0.1, y=y).numpy() == attacks.fgsm(full, x, 0.1, y=y).numpy())
    assert agree > 0.95
    for loss in ("ce", "dlr"):
        x_adv = attacks.apgd(mixed, x, 0.1, nb_iter=10, y=y, loss=loss).numpy()
        assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
        assert attacks.accuracy(full, x_adv, y) < 100.0


# -- cleverhans' norm and a model that gives probabilities ----------------------------------------

def test_norm_takes_cleverhans_position_and_only_linf(model, data):
    x, y = data
    np.testing.assert_array_equal(attacks.fgsm(model, x, 0.05, np.inf).numpy(),
                                  attacks.fgsm(model, x, 0.05).numpy())
    np.testing.assert_array_equal(attacks.iterative_fgsm(model, x, 0.05, 0.02, 2, np.inf, y=y).numpy(),
                                  attacks.iterative_fgsm(model, x, 0.05, 0.02, 2, y=y).numpy())
    np.testing.assert_array_equal(attacks.pgd(model, x, 0.05, 0.02, 2, np.inf, y=y).numpy(),
                                  attacks.pgd(model, x, 0.05, 0.02, 2, y=y).numpy())
    for attack, args in ((attacks.fgsm, ()), (attacks.iterative_fgsm, (0.02, 2)), (attacks.pgd, (0.02, 2))):
        with pytest.raises(GreatError, match="norm=2 is not supported: great_tf's attacks are L-inf only"):
            attack(model, x, 0.05, *args, 2)


@pytest.mark.parametrize("attack, kwargs", [
    (attacks.fgsm, {}), (attacks.iterative_fgsm, {"nb_iter": 1}), (attacks.pgd, {"nb_iter": 1}),
    (attacks.spsa, {"nb_iter": 1, "num_samples": 1}), (attacks.apgd, {"nb_iter": 1}),
    (attacks.square, {"nb_queries": 1})])
def test_a_model_giving_probabilities_is_refused(model, data, attack, kwargs):
    x, y = data
    probabilities = tf.keras.Sequential([model, tf.keras.layers.Softmax()])
    with pytest.raises(GreatError, match="model_fn gives probabilities .*not logits"):
        attack(probabilities, x, 0.05, y=y, **kwargs)
