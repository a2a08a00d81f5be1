"""Flags and run plumbing shared by every trainer: presets, run folders, resume, one-line errors."""

import argparse
import json
import os
import shutil
import sys
import time

from great_tf.errors import GreatError


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def fraction_type(text):
    """A share of a data set, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end in one line that names the problem, not a usage wall."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def base_parser(prog, description, datasets, methods, default_dataset):
    """The flags every trainer takes; presets fill whatever the user leaves unset."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--dataset", default=default_dataset, choices=datasets)
    parser.add_argument("--method", default="all", choices=(*methods, "all"),
                        help="one method, or all of them side by side (default)")
    parser.add_argument("--preset", default="small", choices=("small", "paper"),
                        help="small: minutes on 2 CPU cores (default); paper: the paper's settings")
    parser.add_argument("--epochs", type=positive_int, help="training epochs (preset)")
    parser.add_argument("--batch-size", type=positive_int, help="global batch size (preset)")
    parser.add_argument("--width", type=positive_int,
                        help="ResNet first-stage channels, 64 in the paper (preset)")
    parser.add_argument("--train-limit", type=positive_int,
                        help="use only the first N training examples (preset: all)")
    parser.add_argument("--steps-per-epoch", type=positive_int,
                        help="cap the steps of every epoch (for smoke runs)")
    parser.add_argument("--eval-limit", type=positive_int,
                        help="evaluate on only the first N test examples (default: all)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: $TFDS_DATA_DIR)")
    parser.add_argument("--logdir", help="where logs, checkpoints and tables go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --logdir from its last checkpoint")
    parser.add_argument("--stop-after", type=positive_int, metavar="N",
                        help="train at most N epochs now, then stop; the schedule still spans "
                        "--epochs and --resume continues (for time-limited jobs)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                        help="tf.distribute strategy (default: multiworker under TF_CONFIG, "
                        "mirrored with more than one GPU, else default)")
    parser.add_argument("--cpu-replicas", type=positive_int,
                        help="mirror over N logical CPU devices (machines without GPUs, tests)")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step (one device)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 compute with float32 weights and dynamic loss scaling")
    return parser


def setup_runtime(args):
    """Builds the distribution strategy (before any TF op runs); refuses what cannot work.

    Sets `args.distribution` (the strategy). On a multi-worker non-chief, `args.logdir` becomes a
    private temporary folder (a copy of the chief's with --resume, so it resumes from the chief's
    checkpoint) deleted at exit: only the chief writes logs, checkpoints and tables, while every
    worker still runs the same (collective) steps.
    """
    import atexit
    import tempfile

    from great_tf import distribute

    if args.mixed_precision:
        from great_tf.precision import use_mixed_precision

        # Before any model is built: layers take the global dtype policy when they are created.
        use_mixed_precision(True)
    strategy = distribute.make_strategy(args.strategy, args.cpu_replicas)
    if args.jit:
        distribute.check_jit(strategy)  # refused before any data is loaded
    if not distribute.is_chief(strategy):
        private = tempfile.mkdtemp(prefix=f"great_tf_worker{distribute.worker_id(strategy)}_")
        if args.resume and os.path.isdir(args.logdir):
            shutil.copytree(args.logdir, private, dirs_exist_ok=True)
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        args.logdir = private
    args.distribution = strategy
    return strategy


def build_in_scope(args, build):
    """`build()` (models, optimizers, compile) inside the run's strategy scope, then --jit."""
    from great_tf import distribute

    with args.distribution.scope():
        model = distribute.prepare_for_strategy(build(), args.distribution)
    if args.jit:
        distribute.enable_jit(model, args.distribution)
    return model


def apply_preset(args, presets):
    """Fills every unset flag from `presets[args.preset]`."""
    for key, value in presets[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    check_onednn_batch(args)
    return args


def check_onednn_batch(args):
    """Refuses the configurations that crash TensorFlow 2.21's oneDNN convolution gradient.

    Measured here: a ResNet-18 at width 4 or 8 trained on an odd per-replica batch (1, 3, 5, 7, 9)
    dies with a segmentation fault in Conv2DBackpropFilter; width 16, even batches, or
    TF_ENABLE_ONEDNN_OPTS=0 (1.8x slower steps) do not.
    """
    replicas = getattr(args, "cpu_replicas", None) or 1
    # An uneven split gives some replicas one example more: check both sizes.
    odd = [n for n in {args.batch_size // replicas, -(-args.batch_size // replicas)} if n % 2]
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    if onednn and odd and (args.width or 64) < 16:
        per_replica = odd[0]
        raise GreatError(
            f"an odd batch per replica ({per_replica}) at width {args.width} crashes TensorFlow's "
            f"oneDNN convolution gradient: use an even --batch-size, --width 16 or more, or set "
            f"TF_ENABLE_ONEDNN_OPTS=0")


CONFIG_KEYS = ("dataset", "preset", "epochs", "batch_size", "width", "train_limit",
               "steps_per_epoch", "eval_limit", "seed")
# Recorded only when set, so that runs from before the flag existed still resume.
OPTIONAL_CONFIG_KEYS = ("mixed_precision",)


def prepare_run_dir(run_dir, args, extra=None):
    """Creates (or, with --resume, checks) the run folder of one method.

    A fresh run clears an older run in the same folder; a resumed run must use the same settings.
    """
    config = {k: getattr(args, k, None) for k in CONFIG_KEYS}
    config.update({k: True for k in OPTIONAL_CONFIG_KEYS if getattr(args, k, False)})
    config.update(extra or {})
    path = os.path.join(run_dir, "config.json")
    if args.resume and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        keys = list(config) + [k for k in OPTIONAL_CONFIG_KEYS if k in saved and k not in config]
        changed = {k: (saved.get(k), config.get(k)) for k in keys if saved.get(k) != config.get(k)}
        if changed:
            diff = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise GreatError(f"--resume with different settings than the run in {run_dir} ({diff}): "
                             f"use the same flags, or drop --resume to start over")
        return config
    if os.path.exists(run_dir) and not args.resume:
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return config


def load_result(run_dir):
    path = os.path.join(run_dir, "result.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_result(run_dir, result):
    with open(os.path.join(run_dir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


class RunStopped(Exception):
    """--stop-after ended the run early, as asked: not an error."""


def run_cli(main, argv=None):
    """Runs `main(argv)`; a GreatError or an interrupt ends in one line and a non-zero exit, a
    --stop-after stop in one line and exit 0."""
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
        print("interrupted: run again with --resume to continue from the last finished epoch",
              file=sys.stderr)
        sys.exit(130)


def epoch_steps(n, args):
    """Steps per epoch for `n` training examples, capped by --steps-per-epoch."""
    from great_tf.data import steps_per_epoch

    steps = steps_per_epoch(n, args.batch_size)
    return min(steps, args.steps_per_epoch or steps)


def fit_resumable(model, run_dir, args, make_train_dataset, validation_data, epochs, steps,
                  callbacks=()):
    """`model.fit` with a checkpoint per epoch, TensorBoard logs, --resume and --stop-after.

    `make_train_dataset(initial_epoch)` builds the training pipeline from that epoch on. Returns
    (seconds spent, epochs trained now); raises RunStopped when --stop-after ends it early.
    """
    import keras

    from great_tf.checkpoints import EpochCheckpoint, restore_latest

    checkpoints = os.path.join(run_dir, "checkpoints")
    initial_epoch = restore_latest(model, checkpoints) if args.resume else 0
    if initial_epoch:
        print(f"resuming {run_dir} after epoch {initial_epoch}", flush=True)
    stop = min(epochs, initial_epoch + args.stop_after) if getattr(args, "stop_after", None) else epochs
    start = time.time()
    if initial_epoch < stop:
        model.fit(make_train_dataset(initial_epoch), epochs=stop, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, validation_data=validation_data, verbose=args.verbose,
                  shuffle=False,  # the pipeline already shuffles, by (seed, epoch)
                  callbacks=[keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0),
                             EpochCheckpoint(checkpoints), *callbacks])
    if stop < epochs:
        raise RunStopped(f"stopped after epoch {stop} of {epochs} (--stop-after) in {run_dir}: run "
                         f"again with --resume to continue")
    return time.time() - start, epochs - initial_epoch
