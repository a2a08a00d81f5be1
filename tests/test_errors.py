"""Foreseeable failures end in one line and exit 2, not in a traceback: broken TFDS folders, a run
folder that cannot be created (checked before any data loads), bad seeds, a width too large for
memory, the oneDNN odd-batch crash in any ResNet of a run, bad benchmark and tuning flags; and a
corrupt noisy-CIFAR cache is rebuilt."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from great_tf.errors import GreatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("TFDS_DATA_DIR", "")
CIFAR10 = os.path.join(SHARED, "cifar10")
TRAIN_FILE = "cifar10-train.tfrecord-00000-of-00001"

needs_cifar10 = pytest.mark.skipif(not os.path.isdir(CIFAR10), reason="needs CIFAR-10 in TFDS_DATA_DIR")


def cli(module, *args, env_extra=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def one_line_exit_2(result):
    """The single line of stderr of a command that must have ended with exit 2."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def defense(tmp_path, *args):
    return cli("trainers.defense", "--dataset", "cifar10", "--method", "baseline", "--width", "16",
               "--batch-size", "8", "--train-limit", "40", "--logdir", str(tmp_path / "run"), *args)


# -- data folders ---------------------------------------------------------------------------------

def copy_of_cifar10(tmp_path):
    """A writable copy of the CIFAR-10 TFDS folder; returns (data dir, version folder)."""
    data_dir = tmp_path / "tfds"
    shutil.copytree(CIFAR10, data_dir / "cifar10")
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    version = next((data_dir / "cifar10").iterdir())
    return data_dir, version


@needs_cifar10
def test_a_tfds_folder_with_no_prepared_files_is_one_line(tmp_path):
    data_dir, version = copy_of_cifar10(tmp_path)
    for entry in version.iterdir():
        entry.unlink()  # the version folder is there, nothing in it
    line = one_line_exit_2(defense(tmp_path, "--data-dir", str(data_dir)))
    assert line.startswith("error: data set 'cifar10' in") and "has no prepared files" in line
    assert f"delete {version}" in line and "tfds build cifar10" in line


@needs_cifar10
@pytest.mark.parametrize("damage, expected", [
    ("truncate", "truncated record at"),
    ("corrupt", "corrupted record at"),
])
def test_a_truncated_or_corrupt_tfrecord_is_one_line(tmp_path, damage, expected):
    data_dir, version = copy_of_cifar10(tmp_path)
    path = version / TRAIN_FILE
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(50_000)  # inside the first 40 images
        else:
            f.seek(20_000)
            chunk = f.read(100)
            f.seek(20_000)
            f.write(bytes(b ^ 0xFF for b in chunk))
    line = one_line_exit_2(defense(tmp_path, "--data-dir", str(data_dir)))
    assert line.startswith("error: data set 'cifar10' split 'train") and "truncated or corrupt file" in line
    assert expected in line and f"delete {version}" in line


def test_a_run_folder_that_cannot_be_created_is_one_line_before_any_data_loads(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # A data folder that does not exist either: the run folder must be the error reported.
    line = one_line_exit_2(cli("trainers.defense", "--logdir", str(blocker / "runs"),
                               "--data-dir", str(tmp_path / "nowhere")))
    assert line.startswith(f"error: cannot create the run folder {blocker / 'runs'} (Not a directory")
    assert "choose another --logdir" in line


@pytest.mark.parametrize("module", ["trainers.mtl", "trainers.defense", "trainers.distill", "tuning.distill"])
def test_a_negative_seed_is_one_line(module):
    line = one_line_exit_2(cli(module, "--seed", "-1"))
    assert "argument --seed: must be in [0, 2147483647], got -1" in line


# -- memory and oneDNN ----------------------------------------------------------------------------

@needs_cifar10
def test_a_width_too_large_for_memory_is_one_line(tmp_path):
    line = one_line_exit_2(defense(tmp_path, "--width", "100000"))
    assert line.startswith("error: out of memory (OOM when allocating tensor with shape")
    assert "lower --batch-size or --width" in line


@needs_cifar10
def test_an_odd_batch_for_a_narrow_resnet_student_is_one_line_not_a_crash(tmp_path):
    """The issue's SIGABRT: a ResNet-18 student at width 4 on batch 31 (the guard once looked at
    --width only)."""
    from great_tf.models import cnn5

    keras.utils.set_random_seed(0)
    teacher = str(tmp_path / "teacher.keras")
    cnn5((32, 32, 3), 10, width=2, hidden=8).save(teacher)
    line = one_line_exit_2(cli("trainers.distill", "--teacher", teacher, "--student", "resnet18",
                               "--student-width", "4", "--batch-size", "31", "--method", "baseline",
                               "--fraction", "1.0", "--train-limit", "62", "--eval-limit", "8",
                               "--logdir", str(tmp_path / "run")))
    assert line.startswith("error: an odd batch per replica (31) crashes TensorFlow's oneDNN")
    assert "'stage2_0_proj_conv' (4 input channels" in line


def check(model, batch, replicas=1):
    from great_tf.models.resnet import check_onednn_batch

    check_onednn_batch(model, batch, replicas)


def test_the_odd_batch_guard_covers_every_resnet_of_a_run():
    from great_tf import distill, models
    from great_tf.defense import build_defense

    keras.utils.set_random_seed(0)
    # Defense: the main network and the auxiliary classifier (both ResNets).
    wide_main = build_defense("great", (32, 32, 3), 10, 16, steps_per_epoch=1, epochs=1)
    check(wide_main, 7)
    with pytest.raises(GreatError, match=r"odd batch per replica \(7\)"):
        check(build_defense("great", (32, 32, 3), 10, 8, steps_per_epoch=1, epochs=1), 7)
    # Distillation: a CNN-5 student with a narrow ResNet teacher, or a narrow discriminator.
    student = models.cnn5((32, 32, 3), 10, width=4)
    narrow_teacher = models.resnet18((32, 32, 3), 10, width=4)
    with pytest.raises(GreatError, match="stage2_0_proj_conv"):
        check(distill.build_distiller("baseline", narrow_teacher, student, None), 5)
    wide_teacher = models.resnet18((32, 32, 3), 10, width=16)
    disc = models.resnet11_discriminator((32, 32, 3), 4)
    with pytest.raises(GreatError, match="block1_proj_conv"):
        check(distill.build_distiller("great", wide_teacher, models.cnn5((32, 32, 3), 10, width=4), disc), 9)
    check(distill.build_distiller("baseline", wide_teacher, models.cnn5((32, 32, 3), 10, width=4), None), 9)
    # Even batches, even per replica, pass; 9 over 2 replicas is 4 and 5.
    check(narrow_teacher, 8)
    check(narrow_teacher, 8, replicas=2)
    with pytest.raises(GreatError, match=r"\(5\)"):
        check(narrow_teacher, 9, replicas=2)


def test_the_guard_is_off_when_onednn_is(monkeypatch):
    from great_tf import models

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    check(models.resnet18((32, 32, 3), 10, width=4), 7)


# -- the noisy CIFAR-10 cache ---------------------------------------------------------------------

def test_a_corrupt_noisy_cifar_cache_is_rebuilt_with_a_message(tmp_path, capsys):
    from great_tf.data.noisy import cached_noisy_multitask

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(3, dtype=np.int64)
    inputs, targets = cached_noisy_multitask(images, labels, seed=1, cache_dir=str(tmp_path))
    (path,) = tmp_path.glob("*.npz")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    again, again_targets = cached_noisy_multitask(images, labels, seed=1, cache_dir=str(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "rebuilding it" in err[0]
    np.testing.assert_array_equal(again, inputs)
    for key, value in targets.items():
        np.testing.assert_array_equal(again_targets[key], value)
    cached_noisy_multitask(images, labels, seed=1, cache_dir=str(tmp_path))  # the rebuilt file reads
    assert capsys.readouterr().err == ""


# -- benchmarks and tuning: the trainers' flag checks ------------------------------------------------

@pytest.mark.parametrize("module, args, expected", [
    ("bench.distributed", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("bench.distributed", ["--trainers", "foo"], "argument --trainers: invalid choice 'foo'"),
    ("bench.distributed", ["--width", "0"], "argument --width: must be at least 1, got 0"),
    ("bench.mtl", ["--methods", "foo"], "argument --methods: invalid choice 'foo'"),
    ("bench.mtl", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("bench.mtl", ["--width", "0"], "argument --width: must be at least 1, got 0"),
    ("bench.mtl", ["--data-dir", "/nonexistent"], "argument --data-dir: no such folder: /nonexistent"),
    ("bench.defense", ["--widths", "0"], "argument --widths: must be at least 1, got 0"),
    ("bench.defense", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("bench.distill", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("bench.attacks", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    ("bench.attacks", ["--train-images", "0"], "argument --train-images: must be at least 1, got 0"),
    ("bench.attacks", ["--fab-targets", "10"], "argument --fab-targets: CIFAR-10 has 9 classes besides the true one"),
    ("bench.attacks", ["--data-dir", "/nonexistent"], "argument --data-dir: no such folder: /nonexistent"),
    ("tuning.distill", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    ("tuning.distill", ["--cpu-replicas", "0"], "argument --cpu-replicas: must be at least 1, got 0"),
])
def test_bad_benchmark_and_tuning_flags_are_one_line(module, args, expected, capsys):
    import importlib

    entry = importlib.import_module(module)
    with pytest.raises(SystemExit) as exit_:
        (entry.parse_args if hasattr(entry, "parse_args") else entry.main)(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


@pytest.mark.parametrize("flag, available", [("--train-images", 5000), ("--images", 300)])
def test_the_attack_benchmark_refuses_more_images_than_the_data_has(flag, available, monkeypatch):
    """It used to train on random data, saying so only in a parenthesis, when --train-images
    exceeded the split; now a size the split does not have is refused before anything trains."""
    from bench import attacks as bench

    monkeypatch.setattr(bench, "split_size", lambda split, data_dir=None: available)
    monkeypatch.setattr(bench, "trained_model", lambda args: pytest.fail("trained on data it does not have"))
    with pytest.raises(GreatError, match=rf"^{flag} {available + 1} is more than the {available} images "
                                         rf"of the cifar10 \w+ split here: give at most {available}$"):
        bench.main([flag, str(available + 1)])
    assert bench.settled_size(flag, None, available, "training") == available  # not given: the whole split


def test_a_benchmark_ends_a_bad_flag_in_one_line_from_the_command_line():
    line = one_line_exit_2(cli("bench.distributed", "--steps", "0"))
    assert "--steps: must be at least 1" in line


def test_tuning_takes_the_runtime_flags_of_the_trainers():
    from tuning import distill as tuning

    args = tuning.parse_args(["--strategy", "mirrored", "--cpu-replicas", "2", "--mixed-precision"])
    assert (args.strategy, args.cpu_replicas, args.mixed_precision) == ("mirrored", 2, True)
