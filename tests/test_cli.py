"""What a new user sees first: `--help` of the launcher, and no TensorFlow start-up noise."""

import os
import pathlib
import subprocess
import sys

import pytest

from great_tf.startup import keep_line, kept_lines
from trainers import launch

ROOT = pathlib.Path(__file__).resolve().parent.parent
STARTUP_NOISE = ("oneDNN custom operations", "cuda drivers", "absl::InitializeLog", "cpu_feature_guard",
                 "cuInit")


def run(args, level=None, timeout=300):
    """`python args...` from the repository root, with TF_CPP_MIN_LOG_LEVEL as a user would set it
    (None: unset, as in a fresh shell)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def noise(text):
    return [line for line in text.splitlines() if any(marker in line for marker in STARTUP_NOISE)]


def test_launch_help_prints_the_usage_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_:
        launch.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m trainers.launch") and "--workers" in out and "TF_CONFIG" in out


def test_launch_without_a_command_still_says_how_to_give_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        launch.main(["--workers", "2"])
    assert exit_.value.code == 2
    assert "give the worker command after `--`" in capsys.readouterr().err


def test_launch_rejects_an_unknown_flag_before_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        launch.main(["--wrokers", "2", "--", "true"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --wrokers" in capsys.readouterr().err


def test_the_help_of_a_trainer_has_no_tensorflow_start_up_lines():
    result = run(["-m", "trainers.mtl", "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
    assert noise(result.stderr + result.stdout) == []


def test_the_first_operation_has_no_cuda_lines_either():
    # On a machine without CUDA drivers, TensorFlow reports the failed cuInit when it first lists
    # devices; bench's __init__ installs the same filter as trainers'.
    result = run(["-c", "import bench, tensorflow as tf; print(float(tf.constant(1.0) + 1.0))"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "2.0"
    assert noise(result.stderr) == []


PACKAGE_CHECK = ("import sys, os, {package}; from great_tf.startup import QuietTensorFlowImport; "
                 "assert 'tensorflow' not in sys.modules; "
                 "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], "
                 "any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path))")


@pytest.mark.parametrize("package", ["trainers", "bench", "tuning"])
def test_every_entry_package_filters_the_first_tensorflow_import(package):
    # Without importing TensorFlow (cheap): the default level is set and the filter installed.
    result = run(["-c", PACKAGE_CHECK.format(package=package)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2", "True"]


@pytest.mark.parametrize("level, filtered", [("3", "True"), ("0", "False")])
def test_a_level_the_user_set_is_kept_and_zero_filters_nothing(level, filtered):
    result = run(["-c", PACKAGE_CHECK.format(package="tuning")], level=level)
    assert result.stdout.split() == [level, filtered]


def test_the_filter_hides_only_log_lines_below_the_level():
    info = "I0000 00:00:1795697146.722132   10170 port.cc:153] oneDNN custom operations are on.\n"
    error = "E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
    old_style = "2025-09-17 14:44:05.157831: W external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] x\n"
    preamble = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    python_warning = "/x/site-packages/foo.py:3: DeprecationWarning: bar\n"
    assert [keep_line(line, 2) for line in (info, error, old_style, preamble, python_warning)] == [
        False, True, False, False, True]
    assert [keep_line(line, 1) for line in (info, old_style)] == [False, True]
    assert all(keep_line(line, 0) for line in (info, error, old_style, preamble, python_warning))


def test_a_cuinit_failure_is_dropped_only_where_no_driver_was_found():
    no_driver = "I0000 00:00:1.5   1 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
    cuinit = "E0000 00:00:2.5   1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    assert kept_lines(no_driver + cuinit, 2) == []
    assert kept_lines(cuinit, 2) == [cuinit]  # a driver is installed but failed: news
    assert kept_lines(no_driver + cuinit, 0) == [no_driver, cuinit]
