"""`python -m trainers.mtl` end to end: on the real CIFAR-10 subset at tiny width, and every
method over two seeds with the single-task baselines and Δm on a toy benchmark registered here
(6x6 inputs, a one-convolution encoder) that keeps 30 runs within a minute."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from great_tf import mtl
from great_tf.mtl import experiment, report
from great_tf.mtl.benchmarks import Benchmark, register_benchmark
from great_tf.summaries import read_events
from trainers import flags
from trainers import mtl as trainer

TINY = ["--width", "2", "--batch-size", "8", "--train-limit", "16", "--eval-limit", "64",
        "--verbose", "0"]
TOY = "toy_mtl"


def run(logdir, *extra):
    return trainer.main(["--logdir", str(logdir), *TINY, *extra])


def test_methods_side_by_side_with_tables_and_tensorboard_summaries(tmp_path, cache_dir):
    rows = run(tmp_path, "--methods", "gradnorm,great", "--epochs", "2", "--steps-per-epoch", "1")
    assert [r["method"] for r in rows] == ["gradnorm", "great"]  # no Δm: the order run
    for row in rows:
        assert 0.0 <= row["class error %"] <= 100.0 and row["colour RMSE"] > 0.0
        assert row[report.DELTA_M] is None and row["seeds"] == 1
    table = json.loads((tmp_path / "table4.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["gradnorm", "great"]
    assert table["columns"] == ["method", "class error %", "colour RMSE", "edge RMSE", "auto RMSE",
                                report.DELTA_M, "train s", "images/s"]
    assert [r["seed"] for r in table["seed_rows"]] == [0, 0]
    assert os.path.exists(tmp_path / "table4.csv")
    md = (tmp_path / "table4.md").read_text()
    assert "| great |" in md and "run with --method single (or --method all) for Δm" in md

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
    # Resuming these runs with other settings is refused (the last --width given wins).
    from great_tf.errors import GreatError

    with pytest.raises(GreatError, match="width 2 -> 4"):
        run(tmp_path, "--methods", "gradnorm,great", "--epochs", "2", "--steps-per-epoch", "1",
            "--resume", "--width", "4")


# -- a toy benchmark: every method, seeds, the single-task baselines, Δm ---------------------------
@pytest.fixture
def toy_benchmark():
    """A registered benchmark ("toy_mtl") with in-memory random data: 16 training and 16 test
    examples, 6x6 inputs, a 3-class task and a dense one, tests/test_mtl_methods.py's network."""
    from great_tf.mtl import benchmarks
    from tests.test_mtl_methods import DIST_TASKS, SIZE, small_network

    def load(split, data_dir=None, seed=0, limit=None):
        rng = np.random.default_rng([seed, split == "test"])
        n = min(16, limit or 16)
        x = rng.random((n, SIZE, SIZE, 1)).astype(np.float32)
        return x, {"class": rng.integers(0, 3, n).astype(np.int32), "auto": 1.0 - x}

    benchmark = register_benchmark(Benchmark(
        name=TOY, tasks=DIST_TASKS, load=load,
        network=lambda input_shape, tasks, width: small_network(tasks)))
    yield benchmark
    benchmarks._BENCHMARKS.pop(TOY, None)


def toy(logdir, *extra):
    return trainer.main(["--logdir", str(logdir), "--dataset", TOY, "--batch-size", "8",
                         "--width", "2", "--epochs", "1", "--steps-per-epoch", "1", "--verbose", "0",
                         *extra])


def test_methods_and_the_single_task_baselines_over_two_seeds(tmp_path, toy_benchmark):
    # --method all is every registered method and the baselines; each method trains on its own in
    # tests/test_mtl_methods.py, so two seeds of GREAT and of PCGrad (whose task order has a
    # seed of its own) are enough here.
    assert set(experiment.selected_methods("all")) == {"single", *mtl.available_methods()}
    rows = toy(tmp_path, "--methods", "single,great,pcgrad", "--seeds", "2")
    methods = {"single", "great", "pcgrad"}
    assert {r["method"] for r in rows} == methods and len(rows) == len(methods)
    deltas = [r[report.DELTA_M] for r in rows]
    assert deltas == sorted(deltas, reverse=True)  # best first
    table = json.loads((tmp_path / "table4.json").read_text(encoding="utf-8"))
    seed_rows = table["seed_rows"]
    runs = sorted((m, s) for m in methods for s in (0, 1))
    assert sorted((r["method"], r["seed"]) for r in seed_rows) == runs
    # Δm of every seed by hand: every metric is lower-is-better here; the baseline is the mean of
    # the single-task networks' two seeds.
    columns = ["class error %", "auto RMSE"]
    base = {c: np.mean([r[c] for r in seed_rows if r["method"] == "single"]) for c in columns}
    for r in seed_rows:
        by_hand = 100 * np.mean([-(r[c] - base[c]) / base[c] for c in columns])
        assert r[report.DELTA_M] == pytest.approx(by_hand)
    # Mean and sample standard deviation over the seeds, for every column.
    for row in table["rows"]:
        mine = [r for r in seed_rows if r["method"] == row["method"]]
        assert row["seeds"] == 2
        for c in [*columns, report.DELTA_M, "train s"]:
            values = [r[c] for r in mine]
            assert row[c] == pytest.approx(np.mean(values))
            assert row[c + report.STD] == pytest.approx(np.std(values, ddof=1))
    assert np.mean([r[report.DELTA_M] for r in seed_rows if r["method"] == "single"]) == pytest.approx(0)
    md = (tmp_path / "table4.md").read_text(encoding="utf-8")
    assert " ± " in md and "| Δm % |" in md and "seeds 0..1 (mean ± sample std)" in md
    with open(tmp_path / "table4.csv", encoding="utf-8") as f:
        assert len(f.read().strip().splitlines()) == 1 + 2 * len(methods)  # a row per seed
    # One folder per run; a method's own seed moves with the run.
    for seed in (0, 1):
        assert (tmp_path / "great" / f"seed{seed}" / "result.json").exists()
        for task in ("class", "auto"):
            config = json.loads((tmp_path / "single" / f"seed{seed}" / task / "config.json").read_text())
            assert (config["method"], config["task"], config["seed"]) == ("single", task, seed)
    config = json.loads((tmp_path / "pcgrad" / "seed1" / "config.json").read_text())
    assert (config["seed"], config["pcgrad_seed"], config["data_seed"]) == (1, 1, 0)
    # Different seeds, different networks.
    great = [r for r in seed_rows if r["method"] == "great"]
    assert great[0]["auto RMSE"] != great[1]["auto RMSE"]


def test_single_task_baselines_are_trained_once_and_give_later_runs_their_delta_m(
        tmp_path, toy_benchmark, capsys):
    rows = toy(tmp_path, "--method", "single")
    assert [r["method"] for r in rows] == ["single"] and rows[0][report.DELTA_M] == 0.0
    checkpoint = tmp_path / "single" / "class" / "checkpoints"
    stamps = {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()}
    single = {**json.loads((tmp_path / "single" / "class" / "result.json").read_text()),
              **json.loads((tmp_path / "single" / "auto" / "result.json").read_text())}

    rows = toy(tmp_path, "--method", "equal")  # Δm from the cached baselines, not trained again
    equal = json.loads((tmp_path / "equal" / "result.json").read_text())
    columns = ("class error %", "auto RMSE")
    by_hand = 100 * np.mean([-(equal[c] - single[c]) / single[c] for c in columns])
    assert {r["method"]: r[report.DELTA_M] for r in rows}["equal"] == pytest.approx(by_hand)
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()} == stamps
    toy(tmp_path, "--method", "single")  # the same settings again: reused
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()} == stamps
    assert "[single/class] trained earlier with these settings, result reused" in capsys.readouterr().out

    rows = toy(tmp_path, "--method", "equal", "--width", "3")  # other settings: no baseline
    assert rows[0][report.DELTA_M] is None


@pytest.mark.parametrize("argv, message", [
    (["--methods", "equal,magic"], "argument --methods: invalid choice 'magic' (choose from single, "),
    (["--method", "great", "--methods", "equal"], "error: use --method or --methods, not both"),
    (["--image-size", "64"], "error: --image-size does not apply to --dataset cifar10_noisy: drop it"),
    (["--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
])
def test_bad_method_choices_end_in_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(trainer.main, ["--logdir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_the_data_sets_presets_options_and_method_defaults():
    from great_tf.mtl.benchmarks import get_benchmark

    nyu = get_benchmark("nyu_depth_v2")
    args = trainer.parse_args(["--dataset", "nyu_depth_v2"])
    assert (args.batch_size, args.width, args.eval_limit) == (16, 8, 64)
    assert args.options == {"image_size": 64, "target_size": 16}
    assert trainer.hyperparameters("gradnorm", args, nyu)["alpha"] == 1.5  # NYUv2's value
    args = trainer.parse_args(["--dataset", "nyu_depth_v2", "--preset", "paper", "--image-size", "160",
                               "--gradnorm-alpha", "0.6"])
    assert (args.epochs, args.width, args.options) == (30, 64, {"image_size": 160, "target_size": 80})
    assert trainer.hyperparameters("gradnorm", args, nyu)["alpha"] == 0.6  # the flag wins
    args = trainer.parse_args([])
    assert (args.dataset, args.epochs, args.batch_size, args.width, args.options) == \
        ("cifar10_noisy", 2, 64, 8, {})
    assert trainer.hyperparameters("gradnorm", args, get_benchmark("cifar10_noisy"))["alpha"] == 0.6
    assert trainer.hyperparameters("pcgrad", args) == {"seed": 0, "space": "shared"}


def test_nyuv2_runs_with_its_splits_options_dense_images_and_nine_metrics(
        tmp_path, cache_dir):
    """On TFDS' mock data: the validation split, --image-size/--target-size, the mapped
    pipeline, the depth and normals images in TensorBoard, the nine metrics of both tasks (three
    of them higher-is-better; Δm by hand in tests/test_mtl_report.py)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        rows = trainer.main(["--logdir", str(tmp_path), "--dataset", "nyu_depth_v2", "--data-dir",
                             "/nonexistent/mock", "--methods", "single,equal", "--image-size", "32",
                             "--target-size", "8", "--width", "2", "--batch-size", "4",
                             "--train-limit", "8", "--eval-limit", "4", "--epochs", "1",
                             "--steps-per-epoch", "1", "--verbose", "0"])
    directions = report.column_directions(mtl.benchmarks.get_benchmark("nyu_depth_v2").tasks)
    single, equal = (next(r for r in rows if r["method"] == m) for m in ("single", "equal"))
    zero = [c for c in directions if single[c] == 0]
    md = (tmp_path / "table4.md").read_text(encoding="utf-8")
    if zero:  # after one step no normal is within 11.25°: a baseline of 0, no Δm, and the reason
        assert equal[report.DELTA_M] is None
        assert f"No Δm: the single-task baseline of {zero[0]!r} is 0" in md
    else:
        by_hand = 100 * np.mean([(1 if d == "higher" else -1) * (equal[c] - single[c]) / single[c]
                                 for c, d in directions.items()])
        assert equal[report.DELTA_M] == pytest.approx(by_hand)
    assert len(directions) == 9 and all(c in md for c in directions)
    config = json.loads((tmp_path / "equal" / "config.json").read_text())
    assert (config["image_size"], config["target_size"], config["eval_limit"]) == (32, 8, 4)
    assert "nyu_depth_v2 validation split" in md
    images = read_events(str(tmp_path / "equal" / "images"))
    assert "./images/depth" in images and "./images/normals" in images
    assert (tmp_path / "single" / "normals" / "result.json").exists()


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
])
def test_bad_flags_end_in_one_line(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(trainer.main, args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]


def test_a_library_refusal_is_one_line_on_the_real_stderr(tmp_path):
    """In a real process: refused by the library when the model is built (every ResNet of the run
    is checked), after the data has loaded, with no TensorFlow start-up lines around it."""
    result = cli("--batch-size", "7", "--width", "4", "--train-limit", "14", "--eval-limit", "8",
                 "--logdir", str(tmp_path / "runs"), env_extra={"GREAT_TF_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and "odd batch per replica (7) crashes" in lines[0]


def test_missing_data_offline_ends_in_one_line(tmp_path):
    result = cli("--data-dir", str(tmp_path / "nowhere"), "--logdir", str(tmp_path / "runs"),
                 env_extra={"GREAT_TF_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: data set 'cifar10'")
    assert "nowhere" in lines[0]
    assert "Traceback" not in result.stderr
