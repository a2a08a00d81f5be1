"""A run whose loss becomes nan or inf stops at that step with one line, in every trainer (they
all fit through `great_tf.runs.fit_resumable`) and in a sweep (the trial fails, the sweep goes on);
results never hold NaN (great_tf.divergence, great_tf.runs.write_json)."""

import argparse
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import runs
from great_tf.errors import TrainingDiverged

STEPS, BAD_BATCH = 3, 5  # batch 5 of the run: epoch 2, step 3


def run_args(**changes):
    values = dict(dataset="d", preset="small", epochs=3, batch_size=4, width=1, train_limit=None,
                  steps_per_epoch=None, eval_limit=None, seed=0, resume=False, resume_if_present=False,
                  stop_after=None, verbose=0)
    values.update(changes)
    return argparse.Namespace(**values)


def stream_with_a_nan_batch(start, stop):
    """Batches [start, stop) of a regression stream; batch BAD_BATCH has a nan input."""
    x = np.ones((stop * 4, 2), np.float32)
    x[BAD_BATCH * 4] = np.nan
    y = np.zeros((stop * 4, 1), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).skip(start)


def small_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_nan_loss_stops_the_run_at_its_step_with_one_line_and_no_checkpoint_of_that_epoch(tmp_path):
    run_dir = str(tmp_path / "run")
    args = run_args()
    runs.prepare_run_dir(run_dir, args)
    with pytest.raises(TrainingDiverged) as err:
        runs.fit_resumable(small_model(), run_dir, args, stream_with_a_nan_batch, None, 3, STEPS,
                           tensorboard=False)
    message = str(err.value)
    assert message.startswith("training stopped at epoch 2, step 3: loss is nan; the run diverged")
    assert "\n" not in message and "alpha_max" in message
    saved = sorted(f for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.endswith(".index"))
    assert saved == ["ckpt-1.index"]  # epoch 1 only: the diverged epoch is never saved


def test_run_cli_ends_a_diverged_run_in_one_line_and_exit_2(capsys):
    def main(argv):
        raise TrainingDiverged("training stopped at epoch 1, step 2: loss is inf; ...")

    with pytest.raises(SystemExit) as exit_:
        runs.run_cli(main, [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: training stopped at epoch 1, step 2: loss is inf; ...\n"


def test_a_diverged_trial_fails_with_its_reason_and_the_sweep_goes_on(tmp_path, capsys):
    """keras-tuner would record a traceback and, after 3 failed trials in a row, end the sweep in
    a RuntimeError; here each diverged trial fails alone, in one line."""
    import keras_tuner as kt

    from tuning.common import make_tuner

    class Space(kt.HyperModel):
        def build(self, hp):
            hp.Choice("alpha", [1.0, 1e30, 2e30, 3e30, 4e30, 5.0])
            return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])  # never trained

        def fit(self, hp, model, *args, **kwargs):
            if hp.get("alpha") == 5:
                raise ValueError("a bug, not a divergence")
            if hp.get("alpha") > 1:
                raise TrainingDiverged("training stopped at epoch 2, step 1: loss is nan; lower it")
            return {"score": 1.0}

    make_tuner(Space(), kt.Objective("score", "max"), "grid", None, str(tmp_path), "p", False, 0).search(verbose=0)
    out, err = capsys.readouterr()
    # keras-tuner prints a traceback for every failed trial: here only the unforeseen error's.
    assert "Traceback" not in out and err.count("Traceback") == 1 and "ValueError: a bug" in err
    lines = [line for line in out.splitlines() if line.startswith("trial")]
    assert len(lines) == 6 and lines[-1].startswith("trial 6 of 6: alpha 5: failed; ")
    assert lines[1].startswith("trial 2 of 6: alpha 1e+30: failed (training stopped at epoch 2, step 1: "
                               "loss is nan; lower it); ")


def test_results_never_hold_nan_a_non_finite_number_is_written_as_null(tmp_path):
    path = str(tmp_path / "result.json")
    runs.write_json(path, {"accuracy": float("nan"), "curve": [1.0, np.float32(np.inf), -math.inf],
                           "range": np.array([np.nan, 2.0]), "name": "Δm"})
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"accuracy": None, "curve": [1.0, None, None], "range": [None, 2.0],
                                "name": "Δm"}
