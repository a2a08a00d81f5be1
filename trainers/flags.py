"""Flags and run plumbing shared by every trainer: presets, run folders, resume, one-line errors."""

import argparse
import json
import os
import shutil
import sys

from great_tf.errors import GreatError


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    return parser


def apply_preset(args, presets):
    """Fills every unset flag from `presets[args.preset]`."""
    for key, value in presets[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


CONFIG_KEYS = ("dataset", "preset", "epochs", "batch_size", "width", "train_limit",
               "steps_per_epoch", "eval_limit", "seed")


def prepare_run_dir(run_dir, args, extra=None):
    """Creates (or, with --resume, checks) the run folder of one method.

    A fresh run clears an older run in the same folder; a resumed run must use the same settings.
    """
    config = {k: getattr(args, k, None) for k in CONFIG_KEYS}
    config.update(extra or {})
    path = os.path.join(run_dir, "config.json")
    if args.resume and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        changed = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
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


def run_cli(main, argv=None):
    """Runs `main(argv)`; a GreatError or an interrupt ends in one line and a non-zero exit."""
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS' folder warnings are not news here
    try:
        return main(argv)
    except GreatError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run again with --resume to continue from the last finished epoch",
              file=sys.stderr)
        sys.exit(130)
