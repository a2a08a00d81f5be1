"""The robustness protocol: column groups and order, one-registration columns, the AA ensemble
(AutoAttack's sequential protocol, never weaker than a component), curves, findings and reports."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from great_tf import attacks, evaluation
from great_tf.errors import GreatError

PAPER = ["Train", "No attack", "FGSM", "iFGSM", "FGSM Worst", "FGSM Random", "iFGSM Worst", "iFGSM Random"]
STRONG = ["No attack", "APGD-CE", "APGD-T", "Square", "AA w/o FAB-T", "AA"]


@pytest.fixture(scope="module")
def problem():
    """A small dense classifier on four classes of noisy 8x8 patterns, trained for a few steps."""
    rng = np.random.default_rng(0)
    centers = rng.random((4, 8, 8, 1))

    def sample(n):
        y = rng.integers(0, 4, n)
        return (np.clip(0.35 + 0.3 * centers[y] + rng.normal(0, 0.1, (n, 8, 8, 1)), 0, 1).astype(np.float32),
                y.astype(np.int32))

    train, test = sample(300), sample(60)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(4)])
    model.compile(tf.keras.optimizers.Adam(1e-2),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*train, epochs=3, batch_size=32, verbose=0)
    return model, train, test


SETTINGS = evaluation.Settings(eps=0.05, iterations=3, restarts=2, spsa_samples=4, spsa_limit=10,
                               apgd_iterations=8, apgd_targets=3, fab_iterations=10, fab_targets=2,
                               square_queries=60,
                               eps_grid=(0.0, 0.05, 0.1), batch_size=16)


def test_groups_hold_the_papers_columns_the_strong_ones_and_everything():
    assert evaluation.column_names("paper") == PAPER
    assert evaluation.column_names("strong") == STRONG
    assert evaluation.column_names("all") == PAPER + ["PGD", "Transfer iFGSM", "SPSA", "APGD-CE", "APGD-T",
                                                      "Square", "AA w/o FAB-T", "AA"]
    assert evaluation.curve_names("all") == ["FGSM", "iFGSM", "APGD-CE"]
    with pytest.raises(GreatError, match="unknown attack group 'weak'"):
        evaluation.column_names("weak")


def test_a_new_attack_reaches_the_table_by_one_registration(problem, tmp_path):
    model, train, test = problem

    def shift_all(model_fn, x, eps, y=None, clip_min=0.0, clip_max=1.0):
        return np.clip(x + eps, clip_min, clip_max)

    evaluation.register_column("Shift", groups=("strong",), note="Shift: every pixel + eps.")(
        lambda ev: ev.outcome("Shift", shift_all, eps=ev.settings.eps))
    try:
        assert evaluation.column_names("strong")[-1] == "Shift" and "Shift" in evaluation.column_names("all")
        assert "Shift" not in evaluation.column_names("paper")
        report = evaluation.evaluate_model(model, train, test, SETTINGS, group="strong", attack_limit=20,
                                           diagnostics=False, saliency_images=0)
        expected = attacks.accuracy(model, np.clip(test[0][:20] + 0.05, 0, 1), test[1][:20])
        assert report.row["Shift"] == pytest.approx(expected)
        assert "Shift: every pixel + eps." in evaluation.column_notes("strong", SETTINGS)
        with pytest.raises(GreatError, match="registered already"):
            evaluation.register_column("Shift")(lambda ev: None)
    finally:
        del evaluation.COLUMNS["Shift"]


def test_aa_is_the_per_example_worst_of_its_components_run_in_order(problem):
    model, train, test = problem
    ev = evaluation.Evaluation(model, train, test, SETTINGS, attack_limit=40)
    components = {name: evaluation.COLUMNS[name].run(ev) for name in ("APGD-CE", "APGD-T", "Square")}
    lite = evaluation.COLUMNS["AA w/o FAB-T"].run(ev)
    for name, outcome in components.items():
        assert np.all(lite <= outcome), name  # never correct where a component fooled the model
    assert np.array_equal(lite, components["APGD-CE"] & components["APGD-T"] & components["Square"])
    assert lite.sum() < components["APGD-CE"].sum()  # the later attacks added something here
    # The same outcome when it runs alone, each attack only on the examples still correct ...
    alone = evaluation.Evaluation(model, train, test, SETTINGS, attack_limit=40)
    np.testing.assert_array_equal(evaluation.COLUMNS["AA w/o FAB-T"].run(alone), lite)
    assert set(alone.outcomes) == set()
    # ... and as the library's autoattack function.
    budget = {"apgd_iterations": 8, "apgd_targets": 3, "fab_iterations": 10, "fab_targets": 2,
              "square_queries": 60}
    x_adv = attacks.autoattack(model, ev.x, SETTINGS.eps, y=ev.y, version="lite", **budget)
    np.testing.assert_array_equal(attacks.correct(model, x_adv.numpy(), ev.y), lite)


def test_aa_is_the_standard_autoattack_with_fab_t_on_the_survivors(problem, monkeypatch):
    import importlib

    autoattack_module = importlib.import_module("great_tf.attacks.autoattack")  # not the function
    model, train, test = problem
    calls = []

    def fab_spy(model_fn, x, eps, **kwargs):
        calls.append((np.asarray(x), kwargs))
        return attacks.fab(model_fn, x, eps, **kwargs)

    monkeypatch.setattr(autoattack_module, "fab", fab_spy)
    ev = evaluation.Evaluation(model, train, test, SETTINGS, attack_limit=40)
    lite = evaluation.COLUMNS["AA w/o FAB-T"].run(ev)
    aa = evaluation.COLUMNS["AA"].run(ev)
    # FAB-T ran once, with the settings' budget, on exactly the examples the others left correct.
    assert len(calls) == 1 and calls[0][1]["nb_iter"] == 10 and calls[0][1]["nb_targets"] == 2
    np.testing.assert_array_equal(calls[0][0], ev.x[lite])
    fab = ev.outcome("FAB-T", attacks.fab, eps=SETTINGS.eps, nb_iter=10, nb_targets=2)
    np.testing.assert_array_equal(aa, lite & fab)
    # Run alone, in AutoAttack's order, and as the library's function: the same flags.
    alone = evaluation.Evaluation(model, train, test, SETTINGS, attack_limit=40)
    np.testing.assert_array_equal(evaluation.COLUMNS["AA"].run(alone), aa)
    x_adv = attacks.autoattack(model, ev.x, SETTINGS.eps, y=ev.y, apgd_iterations=8, apgd_targets=3,
                               fab_iterations=10, fab_targets=2, square_queries=60)
    np.testing.assert_array_equal(attacks.correct(model, x_adv.numpy(), ev.y), aa)
    assert len(calls) == 3  # each time FAB-T, between APGD-T and Square
    notes = evaluation.column_notes("strong", SETTINGS, ev)
    assert any(n.startswith("AA: the standard AutoAttack") and "FAB-T (10 iterations, 2 targets" in n
               for n in notes)
    assert any(n.startswith("AA w/o FAB-T: AutoAttack without FAB-T") for n in notes)


def test_autoattack_versions_and_budgets_are_checked():
    with pytest.raises(GreatError, match="unknown AutoAttack version 'full'"):
        attacks.autoattack(lambda x: x, np.zeros((1, 3)), 0.1, y=[0], version="full")
    with pytest.raises(GreatError, match=r"unknown AutoAttack budget\(s\) \['nb_iter'\]"):
        attacks.autoattack(lambda x: x, np.zeros((1, 3)), 0.1, y=[0], nb_iter=5)


def test_evaluate_model_gives_the_row_curves_findings_and_saliency(problem):
    model, train, test = problem
    report = evaluation.evaluate_model(model, train, test, SETTINGS, surrogate=model, group="all",
                                       attack_limit=24)
    assert list(report.row) == evaluation.column_names("all")
    for name, value in report.row.items():
        assert 0.0 <= value <= 100.0, name
    assert report.row["Transfer iFGSM"] == pytest.approx(report.row["iFGSM"])  # white-box on itself
    assert report.row["AA"] <= report.row["AA w/o FAB-T"] <= min(report.row["APGD-CE"], report.row["APGD-T"],
                                                                 report.row["Square"])
    assert set(report.curves) == {"FGSM", "iFGSM", "APGD-CE"}
    grid, apgd_curve = report.curves["APGD-CE"]
    assert grid == [0.0, 0.05, 0.1] and apgd_curve[1] == pytest.approx(report.row["APGD-CE"])
    assert apgd_curve[0] == pytest.approx(attacks.accuracy(model, test[0][:24], test[1][:24]))
    checks = [f["check"] for f in report.findings]
    assert checks[:3] == ["iterative-vs-single-step", "accuracy-vs-eps", "single-step-above-clean"]
    # The diagnostics reuse the evaluation's own FGSM curve rather than attacking again.
    highest = max(report.curves["FGSM"][1][1:])
    assert f"FGSM reaches at most {highest:.1f} % along eps" in report.findings[2]["evidence"]
    assert not any(f["flagged"] for f in report.findings), report.findings
    assert report.saliency.shape == (3, 8, 8)


def test_paper_group_without_strong_attacks(problem):
    model, train, test = problem
    report = evaluation.evaluate_model(model, train, test, SETTINGS, group="paper", attack_limit=16,
                                       diagnostics=False, saliency_images=0)
    assert list(report.row) == PAPER and set(report.curves) == {"FGSM", "iFGSM"}


def test_write_report_puts_the_findings_under_the_table(problem, tmp_path):
    findings = [{"check": "zero-gradients", "flagged": True, "evidence": "40 of 40 examples ..."}]
    rows = [{"method": "m", **{c: 50.0 for c in STRONG}, "train s": 1.0, "findings": findings,
             "curves": {"APGD-CE": [[0.0, 0.1], [90.0, 10.0]]}}]
    text = evaluation.write_report(rows, "strong", str(tmp_path), "title", ["a note"], "eps", "curves")
    assert "m: gradient masking suspected (1 of 1 checks fired: zero-gradients)." in text
    with open(tmp_path / "robustness.csv", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["method", *STRONG, "train s"]
    saved = json.load(open(tmp_path / "robustness.json", encoding="utf-8"))
    assert any("gradient masking suspected" in n for n in saved["notes"])
    assert os.path.getsize(tmp_path / "accuracy_vs_eps.png") > 0
