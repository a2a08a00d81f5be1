"""The defense trainer end to end on the real data at tiny width, re-evaluation of a saved model,
its one-line errors, and the svhn_cropped loader on TFDS mock data."""

import csv
import os

import pytest

from great_tf import runs
from great_tf.evaluation import column_names
from great_tf.summaries import read_events
from trainers import defense

TINY = ["--width", "4", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "8",
        "--train-limit", "32", "--attack-limit", "8", "--spsa-limit", "4", "--spsa-samples", "2",
        "--iterations", "2", "--restarts", "1", "--eps-grid", "0", "0.1", "--verbose", "0",
        "--apgd-iterations", "3", "--apgd-targets", "2", "--square-queries", "10"]


def needs_cifar10():
    from great_tf.data import resolve_data_dir

    if not os.path.isdir(os.path.join(resolve_data_dir(), "cifar10")):
        pytest.skip("real CIFAR-10 is not in TFDS_DATA_DIR")


def test_trainer_end_to_end_writes_table_figures_events_and_reevaluates(tmp_path):
    needs_cifar10()
    logdir = str(tmp_path / "run")
    # The baseline is the transfer attack's surrogate; the paper's columns suffice for it.
    defense.main(["--dataset", "cifar10", "--method", "baseline", "--logdir", logdir, *TINY,
                  "--attacks", "paper"])
    rows = defense.main(["--dataset", "cifar10", "--method", "great+ce", "--logdir", logdir, *TINY])
    row = rows[0]
    for column in column_names("all"):  # the default: every column
        assert 0.0 <= row[column] <= 100.0, column  # the baseline run is the transfer surrogate
    for name in ("robustness.md", "robustness.csv", "accuracy_vs_eps.png", "saliency.png"):
        assert os.path.getsize(os.path.join(logdir, name)) > 0, name
    markdown = open(os.path.join(logdir, "robustness.md"), encoding="utf-8").read()
    assert "[0, 1] pixel scale" in markdown and "Transfer iFGSM" in markdown and "APGD-T" in markdown
    assert ("great+ce: no gradient-masking check fired" in markdown
            or "great+ce: gradient masking suspected" in markdown)  # the findings, under the table
    assert {f["check"] for f in row["findings"]} >= {"zero-gradients", "unbounded-attack"}
    with open(os.path.join(logdir, "robustness.csv"), encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["method", *column_names("all"), "train s"]
    events = read_events(os.path.join(logdir, "great+ce"))
    tags = set(events)
    assert any(t.endswith("epoch_aux_accuracy") for t in tags)
    assert any(t.endswith("schedule/alpha") for t in tags) and any(t.endswith("schedule/beta") for t in tags)
    assert any("input_gradient/values" in t for t in tags)
    # The saved model evaluates again, without training, to the same clean accuracy and, with the
    # strong attacks only, the same strong columns.
    again, text = defense.evaluate_saved(defense.parse_args(
        ["--evaluate", os.path.join(logdir, "great+ce"), *TINY, "--attacks", "strong"]))
    assert again[0]["No attack"] == pytest.approx(row["No attack"])
    for column in column_names("strong"):
        assert again[0][column] == pytest.approx(row[column]), column
    assert "FGSM" not in again[0] and "AA" in text
    folder = os.path.join(logdir, "great+ce", "evaluation", "eps0.1")  # cifar10's eps: one folder per eps
    assert os.path.exists(os.path.join(folder, "robustness.md"))
    saved = runs.load_result(folder)
    assert saved["AA"] == pytest.approx(row["AA"]) and saved["attacks"] == "strong"


def test_trainer_errors_are_one_line(tmp_path, capsys):
    from trainers import flags

    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(defense.main, ["--eps", "8", "--logdir", str(tmp_path), *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --eps 8.0 is outside [0, 1.0]") and "\n" not in err
    with pytest.raises(SystemExit):
        flags.run_cli(defense.main, ["--evaluate", str(tmp_path / "nothing"), *TINY])
    assert "no saved model" in capsys.readouterr().err


def test_default_eps_grid_and_fgsm_training_eps_follow_the_pixel_scale():
    from great_tf.defense.runs import unit

    # The defaults are fractions of the full range, whatever scale the flags are on.
    on_255 = defense.parse_args(["--pixel-scale", "255", "--eps", "8"])
    on_1 = defense.parse_args([])
    assert on_1.eps_grid == list(defense.EPS_GRID) and on_1.fgsm_train_eps == 0.2
    assert [unit(e, on_255) for e in on_255.eps_grid] == pytest.approx(on_1.eps_grid)
    assert unit(on_255.fgsm_train_eps, on_255) == pytest.approx(0.2)
    # Given flags are taken as they are, on the stated scale.
    given = defense.parse_args(["--pixel-scale", "255", "--eps-grid", "0", "8", "--fgsm-train-eps", "8"])
    assert given.eps_grid == [0.0, 8.0] and given.fgsm_train_eps == 8.0


def saved_run(folder, config, input_shape=(32, 32, 3)):
    """A run folder holding a small classifier's model.keras and the given config.json."""
    import keras

    os.makedirs(folder, exist_ok=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(
        os.path.join(folder, "model.keras"))
    if config is not None:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            f.write(config if isinstance(config, str) else __import__("json").dumps(config))
    return folder


EVALUATE = ["--attack-limit", "4", "--eval-limit", "8", "--attacks", "paper", "--spsa-limit", "2",
            "--spsa-samples", "2", "--iterations", "2", "--restarts", "1", "--eps-grid", "0", "0.1"]


def test_evaluate_describes_the_model_it_evaluates_not_the_current_flags(tmp_path):
    needs_cifar10()
    folder = saved_run(str(tmp_path / "great"), {
        "dataset": "cifar10", "preset": "medium", "epochs": 7, "batch_size": 16, "width": 4,
        "train_limit": 24, "steps_per_epoch": 2, "eval_limit": None, "seed": 5, "method": "great",
        "alpha_max": 1.0, "beta_max": 2.0, "fgsm_train_eps": 0.2, "pixel_scale": 1.0})
    _, text = defense.evaluate_saved(defense.parse_args(["--evaluate", folder, *EVALUATE, "--preset", "small"]))
    assert ("Settings: cifar10, preset medium, 7 epochs of at most 2 steps, batch 16, ResNet-18 width 4, "
            "seed 5; trained on 24 images; Train is on the first 24 training images") in text


def test_evaluate_without_a_config_says_the_training_settings_are_unknown(tmp_path):
    needs_cifar10()
    folder = saved_run(str(tmp_path / "great"), None)
    _, text = defense.evaluate_saved(defense.parse_args(["--evaluate", folder, *EVALUATE,
                                                         "--train-limit", "16"]))
    assert "Settings: cifar10, Settings of its training: unknown (no config.json next to the model)" in text
    assert "preset small" not in text


@pytest.mark.parametrize("config, expected", [
    ('{"dataset": "cifar10", "epo', r"config.json is unreadable \(JSONDecodeError\): it holds the settings"),
    ("[1, 2]", r"config.json is not a run's settings \(a JSON list, not an object\): it holds"),
])
def test_a_corrupt_config_under_evaluate_is_one_line(tmp_path, config, expected):
    from great_tf.errors import GreatError

    folder = saved_run(str(tmp_path / "great"), config)
    with pytest.raises(GreatError, match=expected):
        defense.evaluate_saved(defense.parse_args(["--evaluate", folder, *EVALUATE]))


def test_evaluate_refuses_a_model_of_another_input_shape_in_one_line(tmp_path):
    needs_cifar10()
    from great_tf.errors import GreatError

    folder = saved_run(str(tmp_path / "mnist_model"), {"dataset": "cifar10"}, input_shape=(28, 28, 1))
    with pytest.raises(GreatError, match=r"takes inputs of shape \(28, 28, 1\), but cifar10 has images of "
                                         r"shape \(32, 32, 3\)"):
        defense.evaluate_saved(defense.parse_args(["--evaluate", folder, *EVALUATE]))
