"""`python -m tuning.distill`: a two-trial keras-tuner sweep end to end, stopped and resumed."""

import json
import os

import keras
import pytest

from great_tf.models import cnn5
from tuning import distill as tuning

pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))),
    reason="needs the CIFAR-10 TFDS folder (TFDS_DATA_DIR)")


def test_two_trial_sweep_runs_stops_and_resumes(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    teacher = str(tmp_path / "teacher.keras")
    cnn5((32, 32, 3), 10, width=2, hidden=8).save(teacher)
    argv = ["--search", "great", "--teacher", teacher, "--student-width", "2", "--alphas", "0.1,0.3",
            "--train-limit", "200", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
            "--logdir", str(tmp_path / "sweep")]

    calls = []
    real_score = tuning.score

    def stopping_score(model, dataset):
        calls.append(1)
        if len(calls) == 3:  # during the second trial: the user presses Ctrl-C
            raise KeyboardInterrupt
        return real_score(model, dataset)

    monkeypatch.setattr(tuning, "score", stopping_score)
    with pytest.raises(KeyboardInterrupt):
        tuning.main(argv)

    calls.clear()
    monkeypatch.setattr(tuning, "score", lambda m, d: (calls.append(1), real_score(m, d))[1])
    rows = tuning.main(argv)
    assert len(calls) == 2  # only the interrupted trial ran again (validation + test)
    row = rows[0]
    assert row["method"] == "GREAT" and row["trials run"] == 2
    assert row["trials to best"] in (1, 2) and row["val % min"] <= row["best val %"] == row["val % max"]
    vals = [t["val %"] for t in sorted(trials_of(tmp_path), key=lambda t: t["trial"])]
    first_near = next(i + 1 for i, v in enumerate(vals) if v >= max(vals) - 0.5)
    assert row["trials to within 0.5"] == first_near <= row["trials to best"]
    assert row["paper default val %"] is not None  # alpha 0.1 is in the grid
    with open(str(tmp_path / "sweep" / "sweep_cnn5_100pct_trials.json"), encoding="utf-8") as f:
        trials = json.load(f)["rows"]
    assert sorted(t["alpha"] for t in trials) == [0.1, 0.3]
    assert all(0 <= t["test %"] <= 100 for t in trials)


def trials_of(tmp_path):
    with open(str(tmp_path / "sweep" / "sweep_cnn5_100pct_trials.json"), encoding="utf-8") as f:
        return json.load(f)["rows"]


class MachineGone(BaseException):  # not an Exception: keras-tuner would record a failed trial
    """The process running a sweep ends in the middle of a trial."""


def grid_sweep(directory, ran, stop_at=None):
    """A keras-tuner grid sweep of this package's kind (`tuning.common.make_tuner`) over 3 x 2
    settings whose trials only record their values (in `ran`); the `stop_at`-th trial run ends the
    process as a kill would."""
    import keras_tuner as kt

    from tuning.common import make_tuner

    class Space(kt.HyperModel):
        def build(self, hp):
            hp.Choice("x", [1, 2, 3])
            hp.Choice("y", ["a", "b"])
            return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])  # never trained

        def fit(self, hp, model, *args, **kwargs):
            ran.append((hp.get("x"), hp.get("y")))
            if len(ran) == stop_at:
                raise MachineGone
            return {"score": hp.get("x") + (hp.get("y") == "b") / 2}

    return make_tuner(Space(), kt.Objective("score", "max"), "grid", None, directory, "p", False, 0)


def test_a_grid_sweep_cut_off_in_a_trial_resumes_in_a_new_process_with_the_untried_settings(tmp_path):
    """keras-tuner does not save a grid's order (keras-team/keras-tuner#1055); without
    `rebuild_grid_order` the resumed sweep ends in a KeyError after its first trial."""
    ran = []
    with pytest.raises(MachineGone):
        grid_sweep(str(tmp_path), ran, stop_at=4).search(verbose=0)
    first = list(ran)
    ran.clear()
    tuner = grid_sweep(str(tmp_path), ran)  # reloads the saved state, as a new process would
    tuner.search(verbose=0)
    assert ran == [first[3], *ran[1:]] and len(ran) == 3  # the cut-off trial again, then the rest
    tried = sorted(tuple(t.hyperparameters.values.values()) for t in tuner.oracle.trials.values())
    assert tried == [(x, y) for x in (1, 2, 3) for y in ("a", "b")]  # every setting once
    ran.clear()
    grid_sweep(str(tmp_path), ran).search(verbose=0)  # `--search all` resumed: this method is done
    assert ran == []


def test_each_trial_prints_its_number_of_the_grid_its_score_and_the_best_so_far(tmp_path, capsys):
    """One line a trial (keras-tuner's own output is off in the campaign's sweeps): the number of
    the planned total, the settings, the score and the best of the trials so far, which need not
    be this one; a failed trial says so; a resumed sweep goes on counting; max_trials caps the total."""
    import re

    import keras_tuner as kt

    from tuning.common import make_tuner

    scores = {1: 5.0, 2: 9.0, 3: 7.0, 4: None}  # 4: the trial fails

    class Space(kt.HyperModel):
        def build(self, hp):
            hp.Choice("x", [1, 2, 3, 4])
            return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])  # never trained

        def fit(self, hp, model, *args, **kwargs):
            if scores[hp.get("x")] is None:
                raise kt.errors.FailedTrialError("diverged")
            return {"score": scores[hp.get("x")]}

    def sweep(max_trials=None):
        return make_tuner(Space(), kt.Objective("score", "min"), "grid", max_trials, str(tmp_path),
                          "p", False, 0)

    sweep(max_trials=2).search(verbose=0)
    first = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial")]
    sweep().search(verbose=0)  # resumed with the whole grid
    rest = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial")]
    strip = [re.sub(r"; \d+\.\d min$", "", line) for line in first + rest]
    assert strip == ["trial 1 of 2: x 1: score 5.00 (best so far 5.00)",
                     "trial 2 of 2: x 2: score 9.00 (best so far 5.00)",  # lower is better here
                     "trial 3 of 4: x 3: score 7.00 (best so far 5.00)",
                     "trial 4 of 4: x 4: failed"]
