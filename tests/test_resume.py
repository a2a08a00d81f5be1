"""Bit-exact resume across processes (docs/design.md#resume).

For each trainer (mtl, defense, distill) and for a keras-tuner sweep: an uninterrupted run, and the
same run SIGKILLed at a random moment after its first checkpoint and continued with `--resume` in
a new process. The final weights (every variable of the last checkpoint, optimizer slots, random
streams and the data position included) and the table must be equal, bit for bit. Every run caps
its epochs below the data (`--steps-per-epoch 2` of 5 batches, so a data epoch spans 2.5 training
epochs) and the defense, distillation and tuning runs augment their batches. One more run resumes
from a corrupted newest checkpoint, falling back to the previous one, and must still be equal.
The uninterrupted multi-task run also shows what a trainer prints into a file or pipe by default.
Each chain of processes runs concurrently with the others (they are independent), so that the
module costs about two process lifetimes of wall time.

Corrupted checkpoints one case at a time (checksum, truncated index, bad state file, deleted data
file, a save killed midway) are checked in-process below, on a small model.
"""

import concurrent.futures
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import checkpoints
from great_tf.errors import GreatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_SEED = int(os.environ.get("GREAT_TF_KILL_SEED", time.time_ns() % 1_000_000))
CAPPED = ["--batch-size", "8", "--train-limit", "40", "--steps-per-epoch", "2", "--epochs", "4"]
# Columns that measure time, not results.
TIMING = {"train s", "images/s", "train s (100pct)"}

pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.path.join(os.environ.get("TFDS_DATA_DIR", ""), "cifar10")),
    reason="needs the CIFAR-10 TFDS folder (TFDS_DATA_DIR)")


# -- running and killing child processes ----------------------------------------------------------

class Child:
    """A `python -m ...` child process with its output in a file."""

    env = {}  # set by the `chains` fixture

    def __init__(self, module, args, log):
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **Child.env}
        self.out = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                                     stdout=self.out, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout=600):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = "timeout"
        self.out.close()
        return code

    def text(self):
        with open(self.log, encoding="utf-8") as f:
            return f.read()


def run(module, args, log, timeout=600):
    child = Child(module, args, log)
    code = child.wait(timeout)
    assert code == 0, f"{module} {' '.join(args)} ended with {code}:\n{child.text()[-4000:]}"
    return child.text()


def kill_after_first_checkpoint(module, args, log, pattern, rng, timeout=600):
    """Starts the run, waits for its first checkpoint (a file matching `pattern`), then SIGKILLs it
    after a random delay of up to a second (later epochs, a save, or the evaluation). Returns
    (delay, whether the run was still alive when killed)."""
    child = Child(module, args, log)
    deadline = time.time() + timeout
    while not glob.glob(pattern):
        if child.proc.poll() is not None:
            pytest.fail(f"{module} ended before its first checkpoint:\n{child.text()[-4000:]}")
        if time.time() > deadline:
            child.proc.kill()
            pytest.fail(f"{module}: no checkpoint after {timeout} s")
        time.sleep(0.05)
    delay = rng.uniform(0.0, 1.0)
    time.sleep(delay)
    alive = child.proc.poll() is None
    child.proc.kill()  # SIGKILL: no handler, no cleanup
    child.wait()
    return delay, alive


# -- the chains -----------------------------------------------------------------------------------

def mtl_args(logdir):
    # No --verbose: the default into a file (not a terminal) must be one line per epoch.
    return ["--logdir", logdir, "--method", "great", "--width", "2", "--eval-limit", "16", *CAPPED]


def defense_args(logdir):
    return ["--logdir", logdir, "--dataset", "cifar10", "--method", "great+ce", "--width", "4",
            "--attacks", "paper", "--attack-limit", "8", "--spsa-limit", "4", "--spsa-samples", "2",
            "--iterations", "2", "--restarts", "1", "--eps-grid", "0", "0.1", "--apgd-iterations", "3",
            "--apgd-targets", "2", "--square-queries", "10", "--verbose", "2", *CAPPED]


def distill_args(logdir, teacher):
    return ["--logdir", logdir, "--dataset", "cifar10", "--teacher", teacher, "--student", "cnn5",
            "--student-width", "2", "--method", "great", "--fraction", "1.0", "--eval-limit", "16",
            "--verbose", "2", *CAPPED]


def tuning_args(logdir, teacher):
    return ["--logdir", logdir, "--search", "great", "--teacher", teacher, "--student-width", "2",
            "--alphas", "0.1,0.3", "--train-limit", "200", "--epochs", "3", "--steps-per-epoch", "2",
            "--batch-size", "8"]


CHAINS = {
    # name: (module, args(logdir, teacher), run folder, table file, resume flag)
    "mtl": ("trainers.mtl", lambda d, t: mtl_args(d), "great", "table4.json", "--resume"),
    "defense": ("trainers.defense", lambda d, t: defense_args(d), "great+ce", "robustness.json", "--resume"),
    "distill": ("trainers.distill", distill_args, os.path.join("cnn5_100pct", "great"),
                "table3_cnn5_cnn5.json", "--resume"),
    "tuning": ("tuning.distill", tuning_args, os.path.join("tuner", "great_cnn5_100pct", "trial_*", "run"),
               "sweep_cnn5_100pct_trials.json", None),  # a sweep resumes by running it again
}


def chain(name, base, teacher, rng):
    """The uninterrupted run and the killed-and-resumed one, concurrently; for mtl also a resume
    from a corrupted newest checkpoint. Returns what the tests compare."""
    module, make_args, run_dir, _, resume = CHAINS[name]
    straight, killed = os.path.join(base, name, "straight"), os.path.join(base, name, "killed")
    os.makedirs(os.path.join(base, name), exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reference = pool.submit(run, module, make_args(straight, teacher), straight + ".log")
        first = os.path.join(killed, run_dir, "checkpoints", "ckpt-1.index")
        delay, alive = kill_after_first_checkpoint(module, make_args(killed, teacher), killed + ".log",
                                                   first, rng)
        resumed = pool.submit(run, module, make_args(killed, teacher) + ([resume] if resume else []),
                              killed + ".resume.log")
        outcome = {"delay": delay, "alive": alive, "straight_log": reference.result(),
                   "resume_log": resumed.result(),
                   "straight": straight, "killed": killed}
        if name == "mtl":
            outcome["fallback_log"] = resume_from_corrupted_checkpoint(module, make_args, straight,
                                                                       os.path.join(base, name, "fallback"))
    return outcome


def resume_from_corrupted_checkpoint(module, make_args, straight, fallback):
    """A copy of the finished run whose result is gone and whose newest checkpoint is corrupt."""
    shutil.copytree(straight, fallback)
    run_dir = os.path.join(fallback, "great")
    os.remove(os.path.join(run_dir, "result.json"))
    data = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-4.data-*"))[0]
    flip_bytes(data)
    return run(module, make_args(fallback, None) + ["--resume"], fallback + ".log")


def flip_bytes(path, count=64):
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size // 2)
        chunk = f.read(count)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("resume"))
    Child.env = {"GREAT_TF_CACHE": os.path.join(base, "cache")}
    keras.utils.set_random_seed(0)
    teacher = os.path.join(base, "teacher.keras")
    from great_tf.models import cnn5

    cnn5((32, 32, 3), 10, width=2, hidden=8).save(teacher)
    rng = random.Random(KILL_SEED)
    delays = {name: random.Random(rng.random()) for name in CHAINS}
    with concurrent.futures.ThreadPoolExecutor(len(CHAINS)) as pool:
        futures = {name: pool.submit(chain, name, base, teacher, delays[name]) for name in CHAINS}
        return {name: future.result() for name, future in futures.items()}


# -- comparisons ----------------------------------------------------------------------------------

def final_checkpoint(run_dir):
    return checkpoints.saved_checkpoints(os.path.join(run_dir, "checkpoints"))[0][1]


def checkpoint_tensors(prefix):
    """Every value of a checkpoint except the training time and the save counter."""
    reader = tf.train.load_checkpoint(prefix)
    skip = ("train_seconds", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if not key.startswith(skip)}


def assert_same_checkpoints(a, b, context):
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert set(ta) == set(tb), context
    assert any(k.startswith("next_batch") for k in ta) and any(k.startswith("host_random") for k in ta)
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key], err_msg=f"{context}: {key}")


def table_rows(path):
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_same_run(name, outcome):
    _, _, run_dir, table, _ = CHAINS[name]
    context = (f"{name}, killed {outcome['delay']:.2f} s after its first checkpoint "
               f"(GREAT_TF_KILL_SEED={KILL_SEED})")
    straight_runs = sorted(glob.glob(os.path.join(outcome["straight"], run_dir)))
    killed_runs = sorted(glob.glob(os.path.join(outcome["killed"], run_dir)))
    assert len(straight_runs) == len(killed_runs) >= 1, context
    for a, b in zip(straight_runs, killed_runs):
        assert_same_checkpoints(final_checkpoint(a), final_checkpoint(b), context)
    assert table_rows(os.path.join(outcome["straight"], table)) == \
        table_rows(os.path.join(outcome["killed"], table)), context


@pytest.mark.parametrize("name", ["mtl", "defense", "distill"])
def test_a_trainer_killed_at_a_random_moment_resumes_to_the_uninterrupted_result(chains, name):
    outcome = chains[name]
    assert outcome["alive"], f"{name}: the run had ended before the kill; nothing was interrupted"
    log = outcome["resume_log"]
    assert "resuming " in log and " after epoch " in log
    # The SIGKILLed run could not release its lock: the resumed run takes it over.
    assert "taking over the lock of" in log and "no longer running" in log
    assert_same_run(name, outcome)


def test_a_trainer_writing_into_a_file_prints_one_line_per_epoch(chains):
    log = chains["mtl"]["straight_log"]
    epochs = [line for line in log.splitlines() if line.startswith("2/2 - ")]
    assert len(epochs) == 4, log[-3000:]
    assert "\x1b" not in log and "\r" not in log


def test_a_tuning_sweep_killed_in_a_trial_resumes_to_the_uninterrupted_trials(chains):
    outcome = chains["tuning"]
    assert outcome["alive"]
    assert "taking over the lock of" in outcome["resume_log"]
    assert_same_run("tuning", outcome)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_and_still_matches(chains):
    outcome = chains["mtl"]
    log = outcome["fallback_log"]
    assert "ckpt-4.data-00000-of-00001 does not restore (checksum mismatch" in log
    assert "falling back to the previous one" in log and "after epoch 3 of 4" in log
    fallback = os.path.join(os.path.dirname(outcome["straight"]), "fallback")
    assert_same_checkpoints(final_checkpoint(os.path.join(outcome["straight"], "great")),
                            final_checkpoint(os.path.join(fallback, "great")), "fallback")
    assert table_rows(os.path.join(outcome["straight"], "table4.json")) == \
        table_rows(os.path.join(fallback, "table4.json"))


def test_the_data_position_is_saved_and_a_capped_epoch_continues_the_data_epoch(chains):
    outcome = chains["mtl"]
    reader = tf.train.load_checkpoint(final_checkpoint(os.path.join(outcome["straight"], "great")))
    assert reader.get_tensor("next_batch/.ATTRIBUTES/VARIABLE_VALUE") == 8  # 4 epochs of 2 steps
    assert reader.get_tensor("finished_epochs/.ATTRIBUTES/VARIABLE_VALUE") == 4
    # 40 examples in batches of 8: data epoch 1, batch 3 of 5 after 8 batches.
    assert "(data epoch " in outcome["resume_log"] and "of 5)" in outcome["resume_log"]


# -- corrupted checkpoints, case by case ------------------------------------------------------------

def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5)(inputs)))
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.fixture
def two_checkpoints(tmp_path):
    """A folder with ckpt-1 and ckpt-2 of a small model; ckpt-2 holds other weights."""
    model = small_model()
    directory = str(tmp_path / "checkpoints")
    epoch, manager = checkpoints.checkpoint_manager(model, directory)
    for number in (1, 2):
        model.layers[1].kernel.assign(np.full((4, 5), float(number), np.float32))
        epoch.assign(number)
        manager.checkpoint.next_batch.assign(3 * number)
        manager.save(checkpoint_number=number)
    return directory


def restored_kernel(directory):
    model = small_model()
    state = checkpoints.restore(model, directory)
    return state, float(model.layers[1].kernel.numpy()[0, 0])


def test_the_newest_of_two_checkpoints_restores_with_its_data_position(two_checkpoints):
    state, kernel = restored_kernel(two_checkpoints)
    assert (state.epoch, state.next_batch, kernel) == (2, 6, 2.0)
    assert [n for n, _ in checkpoints.saved_checkpoints(two_checkpoints)] == [2, 1]


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage, file, reason", [
    (flip_bytes, "ckpt-2.data-00000-of-00001", "checksum mismatch"),
    (truncate, "ckpt-2.index", "truncated or corrupt index"),
    (os.remove, "ckpt-2.data-00000-of-00001", "file missing"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(two_checkpoints, capsys, damage,
                                                                    file, reason):
    damage(os.path.join(two_checkpoints, file))
    state, kernel = restored_kernel(two_checkpoints)
    assert (state.epoch, state.next_batch, kernel) == (1, 3, 1.0)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and file in err[0] and reason in err[0] and "falling back to the previous" in err[0]


def test_a_bad_state_file_is_ignored_and_rewritten(two_checkpoints):
    with open(os.path.join(two_checkpoints, "checkpoint"), "w", encoding="utf-8") as f:
        f.write("model_checkpoint_path: {{{ not a proto")
    state, _ = restored_kernel(two_checkpoints)
    assert state.epoch == 2
    _, manager = checkpoints.checkpoint_manager(small_model(), two_checkpoints)  # would raise on it
    assert [os.path.basename(p) for p in manager.checkpoints] == ["ckpt-1", "ckpt-2"]


def test_no_checkpoint_that_restores_is_one_line_naming_the_file_and_how_to_start_over(two_checkpoints):
    for number in (1, 2):
        os.remove(os.path.join(two_checkpoints, f"ckpt-{number}.data-00000-of-00001"))
    with pytest.raises(GreatError) as err:
        checkpoints.restore(small_model(), two_checkpoints, "delete RUN or run without --resume")
    message = str(err.value)
    assert "\n" not in message and "ckpt-2.data-00000-of-00001" in message
    assert "delete RUN or run without --resume to start over" in message


def test_a_save_killed_midway_leaves_no_temp_folder_and_only_two_checkpoints_are_kept(two_checkpoints):
    os.makedirs(os.path.join(two_checkpoints, "ckpt-3_temp", "part-00000-of-00001"))
    model = small_model()
    assert checkpoints.restore(model, two_checkpoints).epoch == 2
    assert not os.path.exists(os.path.join(two_checkpoints, "ckpt-3_temp"))
    epoch, manager = checkpoints.checkpoint_manager(model, two_checkpoints)
    epoch.assign(3)
    manager.save(checkpoint_number=3)
    assert [n for n, _ in checkpoints.saved_checkpoints(two_checkpoints)] == [3, 2]


def test_random_streams_are_part_of_the_checkpoint(tmp_path):
    model = small_model()
    epoch, manager = checkpoints.checkpoint_manager(model, str(tmp_path))
    random.seed(5)
    np.random.seed(5)
    seed_state = checkpoints.seed_generator_states(model)[-1]
    seed_state.assign(np.array([7, 9], seed_state.dtype))
    manager.save(checkpoint_number=1)
    expected = (random.random(), np.random.rand(), seed_state.numpy().copy())
    random.seed(6)
    np.random.seed(6)
    seed_state.assign(np.array([1, 1], seed_state.dtype))
    checkpoints.restore(small_model(), str(tmp_path))
    assert random.random() == expected[0] and np.random.rand() == expected[1]
    np.testing.assert_array_equal(checkpoints.seed_generator_states(model)[-1].numpy(), expected[2])


# -- the training stream --------------------------------------------------------------------------

def test_a_capped_and_augmented_stream_resumes_at_the_batch_where_it_stood():
    from great_tf.data.pipeline import stream_dataset, train_dataset

    x = np.arange(40, dtype=np.float32)
    y = np.arange(40, dtype=np.int32)

    def augment(batch, seed):  # a stateless draw from the batch's seed, as the real augmentation
        xb, yb = batch
        return xb + tf.random.stateless_uniform(tf.shape(xb), seed), yb

    def batches(ds):
        return [(b[0].numpy(), b[1].numpy()) for b in ds]

    # 5 batches per data epoch, 2 steps per training epoch: data epoch 0 ends inside epoch 3.
    full = batches(train_dataset((x, y), 8, seed=3, epochs=4, augment=augment, steps=2))
    resumed = batches(train_dataset((x, y), 8, seed=3, epochs=4, initial_epoch=1, augment=augment, steps=2))
    assert len(full) == 8 and len(resumed) == 6
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        np.testing.assert_array_equal(ya, yb)  # the same examples...
        np.testing.assert_array_equal(xa, xb)  # ...with the same augmentation draws
    assert sorted(np.concatenate([yb for _, yb in full[:5]])) == list(range(40))  # one data epoch
    assert not np.array_equal(full[5][1], full[0][1])  # the next data epoch, reshuffled
    # A pipeline started at any batch gives that batch of the stream.
    np.testing.assert_array_equal(batches(stream_dataset((x, y), 8, 3, 7, 8, augment))[0][0], full[7][0])
