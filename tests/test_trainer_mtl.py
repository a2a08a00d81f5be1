"""`python -m trainers.mtl` end to end on the real CIFAR-10 subset, at tiny width."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from great_tf import checkpoints, mtl
from great_tf.summaries import read_events
from trainers import mtl as trainer

TINY = ["--width", "2", "--batch-size", "8", "--train-limit", "16", "--eval-limit", "64",
        "--verbose", "0"]


def run(logdir, *extra):
    return trainer.main(["--logdir", str(logdir), *TINY, *extra])


def test_all_methods_side_by_side_with_tables_and_tensorboard_summaries(tmp_path, cache_dir):
    rows = run(tmp_path, "--method", "all", "--epochs", "2", "--steps-per-epoch", "1")
    assert [r["method"] for r in rows] == list(mtl.METHODS)
    for row in rows:
        assert 0.0 <= row["class error %"] <= 100.0 and row["colour RMSE"] > 0.0
    table = json.loads((tmp_path / "table4.json").read_text())
    assert [r["method"] for r in table["rows"]] == list(mtl.METHODS)
    assert "edge RMSE" in table["columns"]
    assert os.path.exists(tmp_path / "table4.csv")
    assert "| great |" in (tmp_path / "table4.md").read_text()

    events = read_events(str(tmp_path / "great"))
    for task in ("class", "colour", "edges", "auto"):
        for stat in ("mean", "std", "min", "max"):
            assert [s for s, _ in events[f"great/gal/{task}/{stat}"]] == [0, 1, 2]
        gamma_hist = events[f"great/gal/{task}"][-1][1]
        assert gamma_hist.ndim == 2 and gamma_hist[:, 2].sum() == 4 * 4 * 16  # every gamma entry
        grad_hist = events[f"great/task_gradient/{task}"][-1][1]
        assert grad_hist[:, 2].sum() == 32 * 4 * 4 * 16  # the probe batch's gradients
    means = [float(v) for _, v in events["great/gal/colour/mean"]]
    assert means[0] == 1.0 and means[-1] != 1.0  # the GALs moved
    assert "train/epoch_train_task_classifier_accuracy" in events
    assert "validation/epoch_class_error" in events
    weights = read_events(str(tmp_path / "gradnorm"))
    assert len(weights["great/task_weight/class"]) == 3
    assert "great/task_gradient/edges" in weights


def final_weights(run_dir, method="great"):
    model = mtl.build_mtl_model(method, width=2)
    mtl.compile_mtl(model, steps_per_epoch=2, epochs=2)
    assert checkpoints.restore_latest(model, os.path.join(run_dir, "checkpoints")) == 2
    return [v.numpy() for v in model.weights]


def test_resume_after_an_interrupt_equals_the_uninterrupted_run(tmp_path, cache_dir, monkeypatch):
    straight = tmp_path / "straight"
    run(straight, "--method", "great", "--epochs", "2")

    original = checkpoints.EpochCheckpoint.on_epoch_end

    def interrupt_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(checkpoints.EpochCheckpoint, "on_epoch_end", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, "--method", "great", "--epochs", "2")
    monkeypatch.setattr(checkpoints.EpochCheckpoint, "on_epoch_end", original)
    assert not (interrupted / "great" / "result.json").exists()

    rows = run(interrupted, "--method", "great", "--epochs", "2", "--resume")
    expected = json.loads((straight / "great" / "result.json").read_text())
    for key in ("class error %", "colour RMSE", "edge RMSE", "auto RMSE"):
        assert rows[0][key] == pytest.approx(expected[key], rel=1e-5)
    for a, b in zip(final_weights(interrupted / "great"), final_weights(straight / "great")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resume_with_other_settings_is_refused(tmp_path, cache_dir):
    run(tmp_path, "--method", "equal", "--epochs", "1", "--steps-per-epoch", "1")
    from great_tf.errors import GreatError

    with pytest.raises(GreatError, match="width 2 -> 4"):
        trainer.main(["--logdir", str(tmp_path), "--method", "equal", "--epochs", "1",
                      "--steps-per-epoch", "1", "--resume", "--batch-size", "8",
                      "--train-limit", "32", "--width", "4", "--verbose", "0"])


def cli(*args, env_extra=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "trainers.mtl", *args], capture_output=True,
                          text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def our_lines(stderr):
    """stderr without TensorFlow's C++ start-up log, which no flag silences."""
    return [l for l in stderr.splitlines()
            if l.strip() and not l.startswith(("I0000", "E0000", "W0000", "WARNING: All log"))]


@pytest.mark.parametrize("args, expected", [
    (["--method", "magic"], "invalid choice: 'magic'"),
    (["--dataset", "nyuv2"], "invalid choice: 'nyuv2'"),
    (["--epochs", "0"], "--epochs: must be at least 1"),
    # Refused by the library when the model is built (every ResNet of the run is checked), after
    # the data has loaded: a small --train-limit keeps that quick.
    (["--batch-size", "7", "--width", "4", "--train-limit", "14", "--eval-limit", "8", "--logdir", None],
     "odd batch per replica (7) crashes"),
])
def test_bad_flags_end_in_one_line(args, expected, tmp_path):
    result = cli(*[str(tmp_path / "runs") if a is None else a for a in args],
                 env_extra={"GREAT_TF_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and expected in lines[0]


def test_missing_data_offline_ends_in_one_line(tmp_path):
    result = cli("--data-dir", str(tmp_path / "nowhere"), "--logdir", str(tmp_path / "runs"),
                 env_extra={"GREAT_TF_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: data set 'cifar10'")
    assert "nowhere" in lines[0]
    assert "Traceback" not in result.stderr
