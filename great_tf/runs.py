"""The plumbing of a training run: its folder, its one writer, its settings, resumable fitting and
one-line endings (docs/design.md#resume).

A command (a trainer, a sweep) works in one folder, `--logdir`, and writes one sub-folder per run
(per method, regime, teacher): checkpoints, TensorBoard logs, `config.json` and `result.json`.

- One writer per folder: `lock_run_folder` takes a lock file (`great_tf.lock`, with the owner's
  pid, host, start time and command) under an exclusive `flock`, so a second command on the same
  `--logdir` is refused in one line while the first lives, and a lock left by a dead process
  (SIGKILL, power loss) is taken over with a message. The kernel drops the `flock` of a dead
  process; on file systems without `flock` the owner's pid is checked instead.
- Settings: a run's `config.json` is written when the run has really started (just before its
  first checkpoint), so a run that fails earlier leaves nothing that would block `--resume` with
  corrected flags; `--resume` refuses settings other than the stored ones.
- `--resume` on a `--logdir` with no run in it ends in one line and exit 2 (a mistyped folder would
  otherwise train from scratch for hours); `--resume-if-present` resumes what is there and starts
  the rest.
- `fit_resumable`: `model.fit` over the run's training stream (`great_tf.data.pipeline`) from the
  checkpoint's data position, a checkpoint per epoch (`great_tf.checkpoints`), `--stop-after`, a
  one-line stop at the first non-finite loss (`great_tf.divergence`).
- `write_json`: atomic, and strict JSON: a non-finite number is written as null.
- `run_cli`: a `GreatError`, an out-of-memory error, an interrupt end in one line.
"""

import atexit
import datetime
import errno
import json
import os
import shutil
import socket
import sys
import time

from great_tf.errors import GreatError

LOCK_NAME = "great_tf.lock"
CONFIG_NAME = "config.json"
RESULT_NAME = "result.json"
CONFIG_KEYS = ("dataset", "preset", "epochs", "batch_size", "width", "train_limit",
               "steps_per_epoch", "eval_limit", "seed")
# Recorded only when set, so that runs from before the flag existed still resume.
OPTIONAL_CONFIG_KEYS = ("mixed_precision",)


# -- one writer per run folder ---------------------------------------------------------------------

_HELD = {}  # real path of a locked folder -> file descriptor of its lock file
_CREATED = {}  # real path of a locked folder -> the folders created for it, deepest first


def lock_owner():
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def describe_owner(owner):
    if not owner:
        return "owner unknown"
    text = f"pid {owner.get('pid')} on host {owner.get('host')}"
    if owner.get("started"):
        text += f", started {owner['started']}"
    if owner.get("command"):
        text += f": {owner['command']}"
    return text


def read_owner(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        owner = json.loads(data.decode("utf-8")) if data.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": None, "host": None, "command": "unreadable lock file"}
    return owner if isinstance(owner, dict) else None


def write_owner(fd, owner):
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(owner).encode("utf-8"))
    os.fsync(fd)


def process_alive(pid):
    """Whether the process `pid` exists; False when there is no pid (none was recorded)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True  # exists (someone else's), or unknowable: assume it lives
    return True


def refuse(folder, owner, argument):
    return GreatError(f"another run is writing to {folder} ({describe_owner(owner)}): wait for it to "
                      f"end or choose another {argument}")


def lock_run_folder(folder, argument="--logdir"):
    """Makes this process the one writer of `folder` (created if needed) until it exits or calls
    `release_run_folders`; a no-op if it already is. Raises a one-line `GreatError` if another
    live process holds it (naming `argument`, what the caller calls the folder); takes over, with
    a message, a lock left by a dead one."""
    import fcntl

    created = make_run_folder(folder, argument)
    folder = os.path.realpath(folder)
    if folder in _HELD:
        return
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise GreatError(f"cannot create the lock file {path} ({err.strerror}): choose a writable "
                         f"{argument}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        exclusive = True
    except BlockingIOError:
        owner = read_owner(fd)
        os.close(fd)
        raise refuse(folder, owner, argument) from None
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            os.close(fd)
            raise
        exclusive = False  # a file system without flock: judge by the recorded owner
    previous = read_owner(fd)
    if previous and previous.get("pid") is not None and previous.get("pid") != os.getpid():
        same_host = previous.get("host") == socket.gethostname()
        if not exclusive and (not same_host or process_alive(previous["pid"])):
            os.close(fd)
            raise GreatError(f"{refuse(folder, previous, argument)} (this file system has no file locks: if "
                             f"that run has ended, delete {path})")
        print(f"taking over the lock of {folder} from a run that is no longer running "
              f"({describe_owner(previous)})", file=sys.stderr, flush=True)
    write_owner(fd, lock_owner())
    _HELD[folder] = fd
    _CREATED[folder] = [os.path.realpath(f) for f in created]


def release_run_folders():
    """Releases every run folder this process locked. A lock file stays, emptied; a folder this
    process created and left empty (a run that failed before writing anything) is removed."""
    import fcntl

    for folder, fd in list(_HELD.items()):
        try:
            os.ftruncate(fd, 0)
            remove_if_unused(folder, _CREATED.pop(folder, []))  # still under the lock
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)
            del _HELD[folder]


def remove_if_unused(folder, created):
    """Removes `folder` and the parents created for it when they hold nothing but the lock file."""
    if not created or os.listdir(folder) != [LOCK_NAME]:
        return
    os.remove(os.path.join(folder, LOCK_NAME))
    for path in created:  # deepest first; stops at the first that is not empty
        try:
            os.rmdir(path)
        except OSError:
            return


atexit.register(release_run_folders)


def make_run_folder(folder, argument="--logdir"):
    """Creates `folder` (and its parents) or raises a one-line `GreatError` saying why it cannot
    (naming `argument`, what the caller calls the folder); returns the folders it created, deepest
    first."""
    created, path = [], os.path.abspath(folder)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        created.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise GreatError(f"cannot create the run folder {folder} ({reason}"
                         f"{': ' + err.filename if err.filename and err.filename != folder else ''}): "
                         f"choose another {argument}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GreatError(f"the run folder {folder} is not writable: choose another {argument}")
    return created


# -- --resume --------------------------------------------------------------------------------------

def resuming(args):
    return bool(getattr(args, "resume", False) or getattr(args, "resume_if_present", False))


def has_run(folder, depth=3):
    """True if `folder` or a sub-folder up to `depth` levels down holds a run's config.json."""
    if not os.path.isdir(folder):
        return False
    if os.path.exists(os.path.join(folder, CONFIG_NAME)):
        return True
    if depth == 0:
        return False
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return any(e.is_dir(follow_symlinks=False) and has_run(e.path, depth - 1) for e in entries)


def check_resume(args):
    """`--resume` needs a run in `--logdir` to resume; `--resume-if-present` does not."""
    if getattr(args, "resume", False) and not getattr(args, "resume_if_present", False) \
            and not has_run(args.logdir):
        raise GreatError(f"--resume: there is no run in {args.logdir} to resume: check --logdir, drop "
                         f"--resume to start a new run, or use --resume-if-present to resume only "
                         f"when there is one")


# -- runtime: strategy, folder, lock --------------------------------------------------------------

def setup_runtime(args):
    """Builds the distribution strategy (before any TF op runs), checks `--resume`, creates and
    locks `--logdir` (before any data is loaded); refuses what cannot work, in one line.

    Sets `args.distribution` (the strategy). On a multi-worker non-chief, `args.logdir` becomes a
    private temporary folder (a copy of the chief's with --resume, so it resumes from the chief's
    checkpoint) deleted at exit: only the chief writes logs, checkpoints and tables, while every
    worker still runs the same (collective) steps.
    """
    import tempfile

    from great_tf import distribute

    if getattr(args, "mixed_precision", False):
        from great_tf.precision import use_mixed_precision

        # Before any model is built: layers take the global dtype policy when they are created.
        use_mixed_precision(True)
    strategy = distribute.make_strategy(getattr(args, "strategy", None), getattr(args, "cpu_replicas", None))
    if getattr(args, "jit", False):
        distribute.check_jit(strategy)  # refused before any data is loaded
    writes_logdir = not getattr(args, "evaluate", None)  # --evaluate writes next to the model
    if writes_logdir:
        check_resume(args)
    if not distribute.is_chief(strategy):
        private = tempfile.mkdtemp(prefix=f"great_tf_worker{distribute.worker_id(strategy)}_")
        if resuming(args) and os.path.isdir(args.logdir):
            shutil.copytree(args.logdir, private, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(LOCK_NAME))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        args.logdir = private
    if writes_logdir:
        lock_run_folder(args.logdir)  # creates it: a folder that cannot be made fails here
    args.distribution = strategy
    return strategy


def build_in_scope(args, build):
    """`build()` (models, optimizers, compile) inside the run's strategy scope, then --jit."""
    from great_tf import distribute

    with args.distribution.scope():
        model = distribute.prepare_for_strategy(build(), args.distribution)
    if getattr(args, "jit", False):
        distribute.enable_jit(model, args.distribution)
    return model


def progress_verbosity(verbose, stream=None):
    """Keras' `verbose`: as asked, else progress bars on a terminal and one line per epoch when the
    output goes to a file or a pipe (bars there are escape sequences and a line per step)."""
    if verbose is not None:
        return verbose
    stream = stream or sys.stdout
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):
        return 2


# -- run folders: settings and results -------------------------------------------------------------

_PENDING_CONFIG = {}  # real path of a run folder -> the config to write when the run starts


def run_config(args, extra=None):
    config = {k: getattr(args, k, None) for k in CONFIG_KEYS}
    config.update({k: True for k in OPTIONAL_CONFIG_KEYS if getattr(args, k, False)})
    config.update(extra or {})
    return config


def json_safe(value):
    """`value` with every non-finite float (nan, inf: a metric of a diverged run) as None."""
    import math

    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # a NumPy scalar or array
        return json_safe(value.tolist())
    return value


def write_json(path, value):
    """Writes JSON atomically: a reader (or a resumed run after a kill) never sees half a file.

    JSON has no NaN or Infinity (Python writes them, but strict readers such as jq and
    JavaScript's JSON.parse refuse the file): a non-finite number is written as null."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(json_safe(value), f, indent=2, ensure_ascii=False, allow_nan=False)
    os.replace(tmp, path)


def read_json(path, fix=None):
    """The JSON at `path`; None if missing; a one-line `GreatError` if unreadable, ending in `fix`
    (default: delete the run folder or drop --resume)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        fix = fix or f"delete its run folder {os.path.dirname(path)} or drop --resume to start over"
        raise GreatError(f"{path} is unreadable ({type(err).__name__}): {fix}") from None


def clear_folder(folder):
    """Empties `folder` (a fresh run replaces an older one), keeping a lock file in it."""
    for entry in os.scandir(folder):
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)


def prepare_run_dir(run_dir, args, extra=None):
    """Creates (or, resuming, checks) the run folder of one method; returns the run's config.

    A fresh run clears an older run in the same folder; a resumed run must use the same settings.
    The config is written by `mark_started` (called before the first checkpoint), not here.
    """
    config = run_config(args, extra)
    path = os.path.join(run_dir, CONFIG_NAME)
    if resuming(args) and os.path.exists(path):
        saved = read_json(path)
        keys = list(config) + [k for k in OPTIONAL_CONFIG_KEYS if k in saved and k not in config]
        changed = {k: (saved.get(k), config.get(k)) for k in keys if saved.get(k) != config.get(k)}
        if changed:
            diff = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise GreatError(f"--resume with different settings than the run in {run_dir} ({diff}): "
                             f"use the same flags, or drop --resume to start over")
        return config
    if getattr(args, "resume", False) and not getattr(args, "resume_if_present", False):
        print(f"no earlier run in {run_dir}: starting it", flush=True)
    if os.path.isdir(run_dir):
        clear_folder(run_dir)
    make_run_folder(run_dir)
    _PENDING_CONFIG[os.path.realpath(run_dir)] = config
    return config


def mark_started(run_dir):
    """Writes the run's config.json (from `prepare_run_dir`) if not written yet: from now on the
    folder holds a run that `--resume` continues."""
    config = _PENDING_CONFIG.pop(os.path.realpath(run_dir), None)
    if config is not None:
        write_json(os.path.join(run_dir, CONFIG_NAME), config)


def load_result(run_dir):
    return read_json(os.path.join(run_dir, RESULT_NAME))


def save_result(run_dir, result):
    mark_started(run_dir)
    write_json(os.path.join(run_dir, RESULT_NAME), result)


# -- fitting ---------------------------------------------------------------------------------------

class RunStopped(Exception):
    """--stop-after ended the run early, as asked: not an error."""


def epoch_steps(n, args):
    """Steps per epoch for `n` training examples, capped by --steps-per-epoch."""
    from great_tf.data import steps_per_epoch

    steps = steps_per_epoch(n, args.batch_size)
    return min(steps, getattr(args, "steps_per_epoch", None) or steps)


def stream_maker(train, args, augment=None):
    """`make_stream(start, stop)` -> the run's training batches [start, stop) (see
    `great_tf.data.pipeline`): over `train` arrays, or `train` itself if it is such a function."""
    import inspect

    from great_tf.data.pipeline import stream_dataset

    if callable(train):
        if len(inspect.signature(train).parameters) != 2:
            raise TypeError("fit_resumable takes the training arrays (with augment=) or a function "
                            "make_stream(start_batch, stop_batch); see docs/design.md#resume")
        return train
    return lambda start, stop: stream_dataset(train, args.batch_size, args.seed, start, stop, augment)


def describe_position(state, train, args):
    """'data epoch d, batch b of B' for a restored state over in-memory `train` arrays."""
    from great_tf.data.pipeline import data_position, num_examples, steps_per_epoch

    if callable(train):
        return f"batch {state.next_batch} of the run"
    per_epoch = steps_per_epoch(num_examples(train), args.batch_size)
    data_epoch, batch = data_position(state.next_batch, per_epoch)
    return f"data epoch {data_epoch}, batch {batch} of {per_epoch}"


def fit_resumable(model, run_dir, args, train, validation_data, epochs, steps, callbacks=(),
                  augment=None, tensorboard=True):
    """`model.fit` with a checkpoint per epoch, TensorBoard logs, --resume and --stop-after; a run
    whose loss becomes nan or inf stops there with a one-line `TrainingDiverged`
    (`great_tf.divergence`), before its next checkpoint.

    `train`: the training arrays (any nest), batched and augmented (`augment(batch, seed)`) by the
    run's training stream, or a function `make_stream(start, stop)` giving stream batches
    [start, stop) (e.g. a memory-mapped pipeline). Resuming, the stream starts at the restored
    checkpoint's data position; every ResNet in the model is checked against the oneDNN odd-batch
    crash first. Returns (training seconds of the whole run, epochs trained in all); raises
    RunStopped when --stop-after ends it early. See docs/design.md#resume.
    """
    import keras

    from great_tf.checkpoints import EpochCheckpoint, RunState, restore
    from great_tf.divergence import StopOnNonFiniteLoss
    from great_tf.models.resnet import check_onednn_batch

    check_onednn_batch(model, args.batch_size, model.distribute_strategy.num_replicas_in_sync)
    make_stream = stream_maker(train, args, augment)
    checkpoints = os.path.join(run_dir, "checkpoints")
    state = RunState()
    if resuming(args):
        state = restore(model, checkpoints, f"delete {run_dir} or run without --resume")
    if state.next_batch != state.epoch * steps:
        raise GreatError(f"the checkpoint {state.path} stands at batch {state.next_batch} after "
                         f"{state.epoch} epochs, not at {state.epoch * steps} ({steps} steps per "
                         f"epoch): delete {run_dir} or run without --resume to start over")
    if state.epoch:
        print(f"resuming {run_dir} after epoch {state.epoch} of {epochs} "
              f"({describe_position(state, train, args)})", flush=True)
    stop = min(epochs, state.epoch + args.stop_after) if getattr(args, "stop_after", None) else epochs
    start = time.time()
    if state.epoch < stop:
        logs = []
        if tensorboard:
            logs.append(keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0))
        saver = EpochCheckpoint(checkpoints, steps, state, before_first_save=lambda: mark_started(run_dir))
        model.fit(make_stream(state.next_batch, epochs * steps), epochs=stop, initial_epoch=state.epoch,
                  steps_per_epoch=steps, validation_data=validation_data,
                  verbose=progress_verbosity(getattr(args, "verbose", None)),
                  shuffle=False,  # the stream already shuffles, by (seed, data epoch)
                  callbacks=[StopOnNonFiniteLoss(), *logs, saver, *callbacks])
    seconds = state.train_seconds + (time.time() - start if state.epoch < stop else 0.0)
    if stop < epochs:
        raise RunStopped(f"stopped after epoch {stop} of {epochs} (--stop-after) in {run_dir}: run "
                         f"again with --resume to continue")
    return seconds, epochs


# -- the command line ------------------------------------------------------------------------------

def foreseeable_failure(err):
    """The one-line message for an error a user can meet and fix (out of memory), or None."""
    if isinstance(err, MemoryError):
        return "out of memory: lower --batch-size or --width (or --train-limit)"
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(err, tf.errors.ResourceExhaustedError):
        shape = ""
        text = str(err)
        start = text.find("OOM when allocating tensor with shape")
        if start >= 0:
            shape = " (" + text[start:].split(" and type")[0].split("\n")[0] + ")"
        return (f"out of memory{shape}: lower --batch-size or --width, or use more devices "
                f"(--strategy mirrored)")
    return None


RESUME_HINT = "run again with --resume to continue from the last finished epoch"


def run_cli(main, argv=None, interrupted_hint=RESUME_HINT):
    """Runs `main(argv)`: a GreatError or a foreseeable failure (out of memory) ends in one line and
    exit 2, an interrupt in one line (`interrupted: <interrupted_hint>`: how this command continues,
    None for a command that does not) and exit 130, a --stop-after stop in one line and exit 0.
    Releases the run folders' locks at the end."""
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS' folder warnings are not news here
    try:
        return main(argv)
    except GreatError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunStopped as stop:
        print(stop, file=sys.stderr)
        return None
    except KeyboardInterrupt:
        print("interrupted" + (f": {interrupted_hint}" if interrupted_hint else ""), file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - only foreseeable failures are caught, others re-raised
        message = foreseeable_failure(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        release_run_folders()

