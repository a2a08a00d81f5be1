"""Gradient-masking diagnostics: models masked on purpose must fire, a plainly trained one must not."""

import numpy as np
import pytest
import tensorflow as tf

from great_tf import robustness

CLASSES = 4


@pytest.fixture(scope="module")
def blobs():
    """Four classes of noisy 8x8 patterns in [0, 1]: learnable in a few steps, and close enough
    that eps = 0.05 attacks succeed on about 70 % of them."""
    rng = np.random.default_rng(0)
    centers = rng.random((CLASSES, 8, 8, 1))

    def sample(n):
        y = rng.integers(0, CLASSES, n)
        x = np.clip(0.35 + 0.3 * centers[y] + rng.normal(0, 0.1, (n, 8, 8, 1)), 0, 1)
        return x.astype(np.float32), y.astype(np.int32)

    return sample(400), sample(40)


@pytest.fixture(scope="module")
def plain(blobs):
    (x, y), _ = blobs
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Flatten(),
                                 layers.Dense(16, activation="relu"), layers.Dense(CLASSES)])
    model.compile(tf.keras.optimizers.Adam(1e-2),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model


def diagnose(model_fn, blobs):
    _, (x, y) = blobs
    return robustness.masking_diagnostics(model_fn, x, y, eps=0.05, nb_iter=10, nb_queries=200)


def fired(findings):
    return {f["check"] for f in findings if f["flagged"]}


def test_a_plainly_trained_model_fires_no_check(plain, blobs):
    findings = diagnose(plain, blobs)
    assert len(findings) == 9 and all(set(f) == {"check", "flagged", "evidence"} for f in findings)
    assert fired(findings) == set(), robustness.format_findings(findings)
    _, (x, y) = blobs
    assert np.mean(np.argmax(plain(x), 1) == y) > 0.7  # it learned something: the checks had work
    white_box = next(f["evidence"] for f in findings if f["check"] == "iterative-vs-single-step")
    assert "APGD-CE 100.0 %" not in white_box  # and the attacks did succeed on some examples
    text = robustness.format_findings(findings, "plain")
    assert text.startswith("plain: no gradient-masking check fired (9 checks).")


def test_a_model_that_rounds_its_input_fires(plain, blobs):
    # tf.round has no gradient: every gradient attack stands still (steps of 1/32 < eps).
    findings = diagnose(lambda x: plain(tf.round(x * 32.0) / 32.0), blobs)
    assert {"zero-gradients", "unbounded-attack", "gradient-free-vs-white-box"} <= fired(findings)
    text = robustness.format_findings(findings)
    assert text.startswith("gradient masking suspected") and "[FIRED] zero-gradients: 40 of 40" in text


def test_logits_times_a_large_constant_fire_the_saturation_check(plain, blobs):
    findings = diagnose(lambda x: 1e4 * plain(x), blobs)
    assert "zero-gradients" in fired(findings)
    evidence = next(f["evidence"] for f in findings if f["check"] == "zero-gradients")
    assert "softmax saturates" in evidence


def test_probabilities_instead_of_logits_fire(plain, blobs):
    findings = diagnose(lambda x: tf.nn.softmax(plain(x)), blobs)
    assert "outputs-are-logits" in fired(findings)


def test_nan_outputs_are_a_finding_of_their_own_and_not_judged_as_logits():
    outputs = np.array([[np.nan, 1.0], [-2.0, 3.0], [np.inf, 0.0]])
    finite, logits = robustness.check_outputs_are_finite(outputs), robustness.check_outputs_are_logits(outputs)
    assert finite["flagged"] and finite["evidence"].startswith("2 of 3 examples have nan or inf outputs")
    assert not logits["flagged"] and "range over [-2, 3]" in logits["evidence"]  # the finite row alone
    broken = np.full((4, 2), np.nan)
    text = robustness.format_findings([robustness.check_outputs_are_finite(broken),
                                       robustness.check_outputs_are_logits(broken)])
    assert "[FIRED] outputs-are-finite: 4 of 4 examples" in text and "nan" not in text.split("\n")[-1]
    assert text.endswith("[ok] outputs-are-logits: not run: no example has finite outputs.")


def test_measured_accuracies_are_compared_not_recomputed():
    tol = robustness.tolerance(200)
    assert tol == 1.0 and robustness.tolerance(20) == 10.0
    weaker = robustness.check_iterative_vs_single_step({"FGSM": 30.0, "iFGSM": 45.0, "APGD-CE": 20.0}, tol)
    assert weaker["flagged"] and "iFGSM 45.0 %" in weaker["evidence"]
    rising = robustness.check_accuracy_vs_eps({"iFGSM": ([0.0, 0.1, 0.2], [90.0, 20.0, 35.0])}, tol)
    assert rising["flagged"] and "20.0 % -> 35.0 % at eps 0.2" in rising["evidence"]
    flat = robustness.check_accuracy_vs_eps({"iFGSM": ([0.0, 0.1, 0.2], [90.0, 20.0, 20.5])}, tol)
    assert not flat["flagged"]
    transfer = robustness.check_weaker_than_white_box(
        "transfer-vs-white-box", robustness.TRANSFER,
        {"FGSM": 50.0, "PGD": 40.0, "Transfer iFGSM": 30.0}, tol)
    assert transfer["flagged"] and "PGD 40.0 %" in transfer["evidence"]
    missing = robustness.check_weaker_than_white_box("transfer-vs-white-box", robustness.TRANSFER,
                                                     {"FGSM": 50.0}, tol)
    assert not missing["flagged"] and missing["evidence"].startswith("not run")


def test_fgsm_above_clean_accuracy_fires_but_a_dip_and_rise_below_it_does_not():
    # The FGSM curves of our CIFAR-10 seed-0 evidence runs (eps 0 .. 0.3, 500 test images): the
    # FGSM-trained model (trained at eps 0.2) and the undefended baseline.
    tol = robustness.tolerance(500)
    grid = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3]
    trained = robustness.check_single_step_above_clean(
        {"FGSM": (grid, [60.6, 1.4, 1.6, 38.4, 84.8, 69.4])}, 60.6, tol)
    assert trained["flagged"]
    assert trained["evidence"].startswith("FGSM 84.8 % at eps 0.2, FGSM 69.4 % at eps 0.3 against 60.6 % clean")
    # The baseline's FGSM accuracy rises from 0.8 to 9.2 % (large steps overshoot): not flagged,
    # though the accuracy-vs-eps rule would flag it.
    baseline = {"FGSM": (grid, [63.4, 1.4, 0.8, 2.2, 8.0, 9.2])}
    plain = robustness.check_single_step_above_clean(baseline, 63.4, tol)
    assert not plain["flagged"] and "at most 9.2 %" in plain["evidence"]
    assert robustness.check_accuracy_vs_eps(baseline, tol)["flagged"]
    # Within the noise of the clean accuracy: not flagged.
    assert not robustness.check_single_step_above_clean({"FGSM": ([0.0, 0.1], [60.0, 60.8])}, 60.0, tol)["flagged"]
    assert robustness.check_single_step_above_clean({}, 60.0, tol)["evidence"].startswith("not run")
