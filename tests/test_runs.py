"""One writer per run folder, settings written once a run has started, `--resume` that needs a run,
and progress lines for files (great_tf.runs; docs/design.md#resume)."""

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from great_tf import runs
from great_tf.errors import GreatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from great_tf.runs import lock_run_folder; "
        "lock_run_folder(sys.argv[1]); print('locked', flush=True); time.sleep(120)")


def cli(module, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def our_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def holder(tmp_path):
    """A live process (no TensorFlow, so it starts in a blink) holding the lock of a folder."""
    folder = str(tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, folder, ROOT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_second_run_on_a_locked_folder_is_refused_in_one_line_before_loading_data(holder, tmp_path):
    folder, proc = holder
    result = cli("trainers.mtl", "--logdir", folder, "--method", "equal", "--data-dir",
                 str(tmp_path / "no_data_here"))
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: another run is writing to {os.path.realpath(folder)} (pid {proc.pid} "
                               f"on host {socket.gethostname()}")
    assert "wait for it to end or choose another --logdir" in lines[0]
    with pytest.raises(GreatError, match=f"pid {proc.pid}"):  # and in-process alike
        runs.lock_run_folder(folder)


def test_the_lock_of_a_killed_run_is_taken_over_with_a_message(holder, capsys):
    folder, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        runs.lock_run_folder(folder)
        err = capsys.readouterr().err
        assert f"taking over the lock of {os.path.realpath(folder)} from a run that is no longer running " \
               f"(pid {proc.pid} on host {socket.gethostname()}" in err
        with open(os.path.join(folder, runs.LOCK_NAME), encoding="utf-8") as f:
            assert json.load(f)["pid"] == os.getpid()
        runs.lock_run_folder(folder)  # the owner may lock again (sequential runs in one process)
        assert capsys.readouterr().err == ""
    finally:
        runs.release_run_folders()
    assert os.path.getsize(os.path.join(folder, runs.LOCK_NAME)) == 0  # released: emptied


def test_a_stale_lock_file_from_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / runs.LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(),
                                                     "command": "python -m trainers.mtl"}))
    try:
        runs.lock_run_folder(str(folder))
    finally:
        runs.release_run_folders()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"(pid {dead} on host" in err[0] and "no longer running" in err[0]


def test_run_cli_releases_the_lock_when_the_run_ends(tmp_path, capsys):
    folder = str(tmp_path / "runs")

    def main(argv):
        runs.lock_run_folder(folder)
        raise GreatError("something the user can fix")

    with pytest.raises(SystemExit) as exit_:
        runs.run_cli(main)
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: something the user can fix\n"
    assert runs._HELD == {}
    other = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), folder, ROOT],
                           capture_output=True, text=True)
    assert other.stdout.strip() == "locked" and other.stderr == ""


def settings(**changes):
    values = dict(dataset="d", preset="small", epochs=1, batch_size=8, width=2, train_limit=None,
                  steps_per_epoch=1, eval_limit=None, seed=0, resume=False, resume_if_present=False)
    values.update(changes)
    return argparse.Namespace(**values)


def test_the_config_is_written_only_once_the_run_has_started(tmp_path, capsys):
    run_dir = str(tmp_path / "great")
    runs.prepare_run_dir(run_dir, settings(batch_size=512))
    assert os.path.isdir(run_dir) and not os.path.exists(os.path.join(run_dir, "config.json"))
    # The run died before its first checkpoint: corrected flags with --resume are not refused.
    runs.prepare_run_dir(run_dir, settings(batch_size=32, resume=True))
    assert "no earlier run in" in capsys.readouterr().out
    runs.mark_started(run_dir)  # what the first checkpoint does
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["batch_size"] == 32
    runs.prepare_run_dir(run_dir, settings(batch_size=32, resume=True))
    with pytest.raises(GreatError, match="batch_size 32 -> 64"):
        runs.prepare_run_dir(run_dir, settings(batch_size=64, resume=True))


def test_a_fresh_run_replaces_the_folder_but_keeps_a_lock_file_in_it(tmp_path):
    run_dir = tmp_path / "great"
    run_dir.mkdir()
    (run_dir / "old.txt").write_text("older run")
    (run_dir / runs.LOCK_NAME).write_text("")
    runs.prepare_run_dir(str(run_dir), settings())
    assert sorted(os.listdir(run_dir)) == [runs.LOCK_NAME]


def test_resume_on_a_folder_without_a_run_ends_in_one_line_and_exit_2(tmp_path):
    logdir = tmp_path / "mistyped"
    result = cli("trainers.mtl", "--logdir", str(logdir), "--resume", "--method", "equal")
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: --resume: there is no run in {logdir} to resume")
    assert "--resume-if-present" in lines[0]
    assert not logdir.exists()  # nothing created for a mistyped folder


def test_resume_if_present_accepts_a_folder_without_a_run_and_resume_finds_a_nested_one(tmp_path):
    empty = str(tmp_path / "empty")
    runs.check_resume(settings(logdir=empty, resume=True, resume_if_present=True))
    with pytest.raises(GreatError, match="no run in"):
        runs.check_resume(settings(logdir=empty, resume=True))
    nested = tmp_path / "logdir" / "cnn5_100pct" / "great"
    nested.mkdir(parents=True)
    (nested / "config.json").write_text("{}")
    runs.check_resume(settings(logdir=str(tmp_path / "logdir"), resume=True))


def test_resume_if_present_implies_resume_for_the_trainers():
    from trainers import flags

    parser = flags.base_parser("p", "d", None, ("a",), "x")
    args = flags.apply_preset(parser.parse_args(["--resume-if-present"]), {"small": {}})
    assert args.resume and args.resume_if_present


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_one_line_per_epoch_into_a_file():
    assert runs.progress_verbosity(None, Terminal()) == 1
    assert runs.progress_verbosity(None, io.StringIO()) == 2
    assert runs.progress_verbosity(1, io.StringIO()) == 1  # asked for explicitly
    assert runs.progress_verbosity(0, Terminal()) == 0


def test_a_run_that_fails_before_writing_anything_leaves_no_folder_behind(tmp_path):
    logdir = tmp_path / "new" / "runs"
    result = cli("trainers.mtl", "--logdir", str(logdir), "--method", "equal", "--data-dir",
                 str(tmp_path / "no_data_here"))
    assert result.returncode == 2 and "error: data set 'cifar10'" in result.stderr
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    result = cli("trainers.mtl", "--logdir", str(kept), "--method", "equal", "--data-dir",
                 str(tmp_path / "no_data_here"))
    assert result.returncode == 2 and kept.is_dir()  # a folder the user made stays


def test_an_interrupted_sweep_says_how_to_continue_without_a_missing_resume_flag(capsys):
    from tuning import common

    def main(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        common.run_cli(main)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert err == ("interrupted: run the same command again to continue the sweep: finished trials are "
                   "kept and the interrupted one continues from its last finished epoch\n")
    with pytest.raises(SystemExit):
        runs.run_cli(main, [])  # a trainer has --resume
    assert capsys.readouterr().err == "interrupted: run again with --resume to continue from the last finished epoch\n"
