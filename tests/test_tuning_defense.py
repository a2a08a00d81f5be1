"""`python -m tuning.defense`: the constrained objective, the frontier, and a two-trial sweep end to
end that resumes without training again."""

import json
import os

import pytest

from tuning import defense as sweep

TINY = ["--dataset", "mnist", "--train-limit", "48", "--val-fraction", "0.25", "--epochs", "2",
        "--steps-per-epoch", "1", "--batch-size", "8", "--width", "2", "--attack-limit", "4",
        "--apgd-iterations", "2", "--apgd-targets", "1", "--square-queries", "4",
        "--betas", "0.5,10", "--alphas", "1"]


def test_frontier_keeps_the_trials_nothing_beats_in_both():
    rows = sweep.frontier([
        {"val clean %": 90.0, "val AA %": 10.0}, {"val clean %": 80.0, "val AA %": 30.0},
        {"val clean %": 85.0, "val AA %": 5.0}, {"val clean %": 80.0, "val AA %": 30.0}])
    assert [r["frontier"] for r in rows] == [True, True, False, True]


def test_trials_below_the_clean_limit_are_infeasible_and_score_below_every_feasible_one():
    trials = [(1, {"alpha_max": 1.0, "beta_max": 0.5}, {"val_clean": 97.0, "val_aa": 5.0, "objective": 5.0}),
              (2, {"alpha_max": 1.0, "beta_max": 10.0}, {"val_clean": 70.0, "val_aa": 40.0, "objective": -60.0})]
    rows = sweep.trial_rows(trials, limit=96.0)
    assert [r["feasible"] for r in rows] == [True, False] and all(r["frontier"] for r in rows)


@pytest.mark.skipif(not os.path.isdir(os.environ.get("TFDS_DATA_DIR", "")), reason="needs TFDS_DATA_DIR")
def test_two_trial_sweep_end_to_end_and_resumed(tmp_path, monkeypatch):
    logdir = str(tmp_path / "sweep")
    rows = sweep.main([*TINY, "--logdir", logdir])
    assert sorted(r["beta_max"] for r in rows) == [0.5, 10.0]
    base = json.loads((tmp_path / "sweep" / "baseline" / "result.json").read_text())
    limit = base["val clean %"] - 2.0
    assert base["attacked images"] == 4  # --attack-limit: the noise of the sweep's claim
    for r in rows:
        assert r["feasible"] == (r["val clean %"] >= limit)
        assert r["objective"] == pytest.approx(r["val AA %"] - (0.0 if r["feasible"] else 100.0))
    assert (tmp_path / "sweep" / "sweep_great+ce.png").exists()
    assert "Best feasible" in (tmp_path / "sweep" / "sweep_great+ce.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished sweep trained again")

    monkeypatch.setattr(sweep, "fit_and_score", no_training)
    again = sweep.main([*TINY, "--logdir", logdir])
    assert [(r["beta_max"], r["val AA %"]) for r in again] == [(r["beta_max"], r["val AA %"]) for r in rows]
