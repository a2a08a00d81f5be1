"""Checkpoints at every epoch end, and resuming an interrupted run exactly where it stood
(docs/design.md#resume).

A checkpoint holds everything the rest of a run depends on:
- the model (every sub-network, GAL and method weight) and every optimizer it owns (their step
  counters drive the learning-rate schedules);
- the number of finished epochs and the data position: the absolute index of the next batch of
  the run's training stream (`great_tf.data.pipeline`), from which the data epoch and the batch
  within it follow (a capped epoch ends inside a data epoch);
- every random stream: each Keras `SeedGenerator` of the model and Keras' global one, and the
  Python and NumPy global generators. The library's own randomness (shuffles, augmentation,
  attacks) is stateless, a function of (seed, batch index), and needs no state;
- the training seconds so far, so that a report after a resume gives the whole run's time.

The last two checkpoints are kept. `restore` tries the newest first; one that does not restore
(checksum mismatch, truncated index, deleted data file, a checkpoint of another model) is reported
in one line and the previous one is used; when none restores, a one-line `GreatError` names the
file and how to start over. The `checkpoint` state file is not trusted: checkpoints are found by
their index files, and the state file is rewritten from them. A save killed midway leaves a
`ckpt-N_temp/` folder, removed before the next restore or save; a save that fails (a full disk, a
file-size limit) ends the run in one line, its partial files removed and the previous checkpoints
intact.
"""

import dataclasses
import glob
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError

KEEP = 2  # checkpoints kept: the newest, and the previous one to fall back to
PREFIX = "ckpt"


@dataclasses.dataclass(frozen=True)
class RunState:
    """Where a restored run stands: finished epochs, the next batch of its training stream, the
    training seconds spent so far, and the checkpoint it came from (None: a fresh run)."""

    epoch: int = 0
    next_batch: int = 0
    train_seconds: float = 0.0
    path: str = None


def model_optimizers(model):
    """Every optimizer the model holds as an attribute (`optimizer`, `weight_optimizer`, ...)."""
    found = {}
    for name, value in sorted(vars(model).items()):
        if isinstance(value, keras.optimizers.Optimizer):
            found[name.lstrip("_")] = value
    if getattr(model, "optimizer", None) is not None:
        found["optimizer"] = model.optimizer
    return found


def seed_generator_states(model):
    """The state variables of every Keras `SeedGenerator` in the model (dropout and other random
    layers) and of Keras' global one (`keras.random.*` without a seed)."""
    weights = {id(v) for v in model.weights}
    states = [v for v in model.variables if id(v) not in weights]
    try:
        from keras.src.random.seed_generator import global_seed_generator
    except ImportError:  # a Keras without it: nothing global to save
        return states
    return states + [global_seed_generator().state]


class HostRandomState(tf.train.experimental.PythonState):
    """The Python and NumPy global random generators, saved and restored with the checkpoint."""

    def serialize(self):
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return json.dumps({"python": [version, list(internal), gauss],
                           "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]})

    def deserialize(self, string_value):
        state = json.loads(string_value)
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, cached))


def run_checkpoint(model):
    """A `tf.train.Checkpoint` of everything listed in the module docstring.

    Model weights and optimizer variables are listed explicitly: Keras' dict attributes (a model's
    dict of decoders, say) are not TensorFlow trackables, so a checkpoint of the model object alone
    silently misses whatever is reachable only through them (BatchNormalization statistics).
    """
    state = {
        "finished_epochs": tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs"),
        "next_batch": tf.Variable(0, dtype=tf.int64, trainable=False, name="next_batch"),
        "train_seconds": tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds"),
        "model_weights": list(model.weights),
        "seed_generators": seed_generator_states(model),
        "host_random": HostRandomState(),
    }
    for name, optimizer in model_optimizers(model).items():
        state[name] = list(optimizer.variables)
    return tf.train.Checkpoint(**state)


# -- the checkpoint folder ---------------------------------------------------------------------------

def saved_checkpoints(directory):
    """[(number, prefix)] of the checkpoints in `directory` that have an index file, newest first."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*.index")):
        match = re.fullmatch(rf"{PREFIX}-(\d+)\.index", os.path.basename(index))
        if match:
            found.append((int(match.group(1)), index[: -len(".index")]))
    return sorted(found, reverse=True)


def clean_partial_saves(directory):
    """Removes the `ckpt-N_temp/` folders a save killed midway leaves behind."""
    for temp in glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*_temp")):
        shutil.rmtree(temp, ignore_errors=True)


def rewrite_state_file(directory):
    """Writes TensorFlow's `checkpoint` state file from the index files on disk, so that an
    unreadable or stale state file cannot stop the manager (which reads it when created)."""
    saved = saved_checkpoints(directory)
    state_file = os.path.join(directory, "checkpoint")
    if not saved:
        if os.path.exists(state_file):
            os.remove(state_file)
        return
    saved = list(reversed(saved))  # oldest first
    names = [os.path.basename(prefix) for _, prefix in saved]
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    # With their times, the manager counts them against max_to_keep (else it keeps them forever).
    lines += [f"all_model_checkpoint_timestamps: {os.path.getmtime(prefix + '.index'):.6f}"
              for _, prefix in saved]
    tmp = f"{state_file}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, state_file)


def checkpoint_manager(model, directory, max_to_keep=KEEP):
    """(finished-epochs variable, manager) over `run_checkpoint(model)` in `directory`; the
    manager's `checkpoint` also holds `next_batch` and `train_seconds`."""
    if os.path.isdir(directory):
        clean_partial_saves(directory)
        rewrite_state_file(directory)
    checkpoint = run_checkpoint(model)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep,
                                         checkpoint_name=PREFIX)
    return checkpoint.finished_epochs, manager


# -- saving ----------------------------------------------------------------------------------------

class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint (see the module docstring) after every epoch, keeping the last two.

    `steps_per_epoch`: the training stream's batches per epoch (default: Keras' `steps`), for the
    data position. `start`: the `RunState` the run resumed from (its batches and seconds are
    added). `before_first_save()` runs once, before the first save (the run's config is written
    then: a run that dies before its first checkpoint leaves nothing to resume).
    """

    def __init__(self, directory, steps_per_epoch=None, start=None, max_to_keep=KEEP,
                 before_first_save=None):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.start = start or RunState()
        self.max_to_keep = max_to_keep
        self.before_first_save = before_first_save
        self._manager = None

    def on_train_begin(self, logs=None):
        from great_tf.distribute import is_chief

        # Multi-worker: every worker saves (the save may need collective ops), only the chief
        # into `directory`; the others into a temporary folder deleted at the end (TF's
        # documented pattern).
        chief = is_chief(self.model.distribute_strategy)
        self._scratch = None if chief else tempfile.mkdtemp(prefix="great_tf_ckpt_")
        directory = self._scratch or self.directory
        self._epoch, self._manager = checkpoint_manager(self.model, directory, self.max_to_keep)
        self._began = time.time()

    def on_epoch_end(self, epoch, logs=None):
        steps = self.steps_per_epoch or self.params.get("steps")
        checkpoint = self._manager.checkpoint
        self._epoch.assign(epoch + 1)
        checkpoint.next_batch.assign((epoch + 1) * steps)
        checkpoint.train_seconds.assign(self.start.train_seconds + time.time() - self._began)
        try:
            if self.before_first_save is not None:
                self.before_first_save()
                self.before_first_save = None
            self._manager.save(checkpoint_number=epoch + 1)
        except (tf.errors.OpError, OSError) as err:  # a full disk, a file-size limit, a lost mount
            raise self.save_failed(epoch + 1, err) from None

    def save_failed(self, epoch, err):
        """The one-line error of a save that failed; the save's partial files are removed, and
        the previous checkpoints were not touched (the manager deletes old ones only after a
        save succeeded), so --resume continues from the last saved epoch."""
        clean_partial_saves(self._manager.directory)
        if isinstance(err, OSError):
            reason = err.strerror or type(err).__name__
        else:  # TensorFlow's message ends in the system's: "...tempstate123; File too large [Op:SaveV2]"
            reason = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", str(err)).split(";")[-1].strip() or type(err).__name__
        last = saved_checkpoints(self._manager.directory)
        resume = (f"--resume continues after epoch {last[0][0]}, its last saved checkpoint" if last
                  else "no epoch of this run is saved yet")
        return GreatError(f"cannot save the checkpoint of epoch {epoch} in {self._manager.directory} "
                          f"({reason}): free disk space (or raise the file-size limit) and run again; "
                          f"{resume}")

    def on_train_end(self, logs=None):
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


# -- restoring -------------------------------------------------------------------------------------

KNOWN_FAILURES = (  # (text in TensorFlow's message, what it means)
    ("Checksum does not match", "checksum mismatch: the file is corrupt"),
    ("bad magic number", "truncated or corrupt index"),
    ("No such file or directory", "file missing"),
    ("truncated", "truncated file"),
    ("Unsuccessful TensorSliceReader", "unreadable checkpoint"),
)


def failure_reason(err):
    """What went wrong in a restore, short enough for a one-line message."""
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", " ", str(err))
    text = re.sub(r"\s+", " ", text).strip()
    for marker, meaning in KNOWN_FAILURES:
        if marker in text:
            return meaning
    if isinstance(err, AssertionError):
        return "it does not match this model (another model, or an older version of great_tf)"
    return f"{type(err).__name__}: {text[:157] + '...' if len(text) > 160 else text}"


def failing_file(prefix, err):
    """The file a restore error is about: a data file named (or a shard meant) in the message,
    else the index."""
    text = str(err)
    named = re.search(re.escape(os.path.basename(prefix)) + r"\.data-\d+-of-\d+", text)
    if named:
        return os.path.join(os.path.dirname(prefix), named.group(0))
    shard = re.search(r"shard (\d+)", text)
    if shard:
        shards = glob.glob(glob.escape(prefix) + f".data-{int(shard.group(1)):05d}-of-*")
        if shards:
            return shards[0]
    return prefix + ".index"


def attempt_restore(model, prefix):
    """(checkpoint, None) if `prefix` restores into `model`, else (None, (failing file, reason))."""
    import gc
    import logging

    checkpoint = run_checkpoint(model)
    try:
        checkpoint.restore(prefix).assert_existing_objects_matched()
        return checkpoint, None
    except (tf.errors.OpError, AssertionError, ValueError, KeyError) as err:
        failure = (failing_file(prefix, err), failure_reason(err))
    # The abandoned attempt (held by the traceback until here) would log a page of warnings about
    # unrestored values when freed: free it now, quietly.
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        del checkpoint
        gc.collect()
    finally:
        tf_logger.setLevel(level)
    return None, failure


def restore(model, directory, start_over_hint="delete the run folder or run without --resume"):
    """Restores the newest checkpoint of `directory` that restores into the compiled `model`.

    Returns its `RunState` (a zero `RunState` when there is no checkpoint). A checkpoint that does
    not restore is reported on stderr and the previous one tried; when none restores, raises a
    one-line `GreatError` naming the newest one's failing file and `start_over_hint`.
    """
    if not os.path.isdir(directory):
        return RunState()
    clean_partial_saves(directory)
    saved = saved_checkpoints(directory)
    first_failure = None
    for number, prefix in saved:
        checkpoint, failure = attempt_restore(model, prefix)
        if failure is None:
            return RunState(int(checkpoint.finished_epochs.numpy()), int(checkpoint.next_batch.numpy()),
                            float(checkpoint.train_seconds.numpy()), prefix)
        path, reason = failure
        first_failure = first_failure or (path, reason)
        older = "falling back to the previous one" if number != saved[-1][0] else "no older one is left"
        print(f"checkpoint {path} does not restore ({reason}): {older}", file=sys.stderr, flush=True)
    if first_failure is None:
        return RunState()
    path, reason = first_failure
    raise GreatError(f"no checkpoint in {directory} restores ({path}: {reason}): {start_over_hint} "
                     f"to start over")


def restore_latest(model, directory):
    """Restores the newest checkpoint that restores; returns its finished epochs (0: none)."""
    return restore(model, directory).epoch
