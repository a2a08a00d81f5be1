"""The flags every entry point shares (trainers, tuning, benchmarks): parsing, presets and checks.

Everything a run does with them (folders, locks, resume, fitting, one-line endings) lives in
`great_tf.runs`; the names trainers use from there are re-exported below.
"""

import argparse
import math
import os

from great_tf.runs import (  # noqa: F401 - re-exported for the trainers
    RunStopped, build_in_scope, epoch_steps, fit_resumable, load_result, mark_started,
    prepare_run_dir, run_cli, save_result, setup_runtime)

MAX_SEED = 2**31 - 1  # NumPy, Python and TensorFlow all take it; stateless seeds add to it


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_type(text):
    """A random seed in [0, 2^31 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {value}")
    return value


def number_type(low=None, high=None, open_low=False):
    """A type for a finite number in [low, high] ((low, high] with `open_low`; None: unbounded):
    nan, inf and numbers out of range are refused when the flags are parsed, not after training."""
    bounds = []
    if low is not None and high is not None:
        bounds = [f"in {'(' if open_low else '['}{low:g}, {high:g}]"]
    elif low is not None:
        bounds = [f"{'>' if open_low else '>='} {low:g}"]
    elif high is not None:
        bounds = [f"<= {high:g}"]
    wanted = " ".join(["a finite number", *bounds])

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (not math.isfinite(value) or (low is not None and (value < low or open_low and value == low))
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.wanted = wanted  # for number_list's message
    return parse


finite_float = number_type()
nonnegative_float = number_type(low=0.0)  # a loss weight (alpha, beta), an eps
positive_float = number_type(low=0.0, open_low=True)  # a temperature, a pixel scale
unit_float = number_type(low=0.0, high=1.0)  # a mixing weight, e.g. Hinton's alpha
fraction_type = number_type(low=0.0, high=1.0, open_low=True)  # a share of a data set


def number_list(item_type):
    """A type for a non-empty comma-separated list of `item_type` numbers (e.g. --alphas 0.1,0.5):
    an empty list is refused, not silently replaced by a default."""

    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        try:
            return [item_type(item) for item in items]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, each "
                                             f"{item_type.wanted}, got {text!r}") from None

    return parse


def choice_list(choices):
    """A type for comma-separated names, each one of `choices` (e.g. --methods equal,great)."""

    def parse(text):
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"invalid choice {', '.join(map(repr, unknown)) or repr(text)} (choose from "
                f"{', '.join(choices)}, comma-separated)")
        return names

    return parse


def existing_dir(text):
    """A folder that exists (for --data-dir of commands that fail late on a missing one)."""
    path = os.path.expanduser(text)
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return path


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end in one line that names the problem, not a usage wall."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_runtime_flags(parser):
    """Where and how the steps run: strategy, replicas, XLA, mixed precision."""
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                        help="tf.distribute strategy (default: multiworker under TF_CONFIG, "
                        "mirrored with more than one GPU, else default)")
    parser.add_argument("--cpu-replicas", type=positive_int,
                        help="mirror over N logical CPU devices (machines without GPUs, tests)")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step (one device)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 compute with float32 weights and dynamic loss scaling")
    return parser


def base_parser(prog, description, datasets, methods, default_dataset):
    """The flags every trainer takes; presets fill whatever the user leaves unset."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--dataset", default=default_dataset, choices=datasets)
    parser.add_argument("--method", default="all", choices=(*methods, "all"),
                        help="one method, or all of them side by side (default)")
    parser.add_argument("--preset", default="small", choices=("small", "medium", "large", "paper"),
                        help="small: minutes on 2 CPU cores (default); medium: the evidence runs "
                        "of docs/results.md on the CIFAR-10 subset, at most about 20 minutes per "
                        "method and seed; large: the complete CIFAR-10 (give its --data-dir), "
                        "hours per method; paper: the paper's settings")
    parser.add_argument("--epochs", type=positive_int, help="training epochs (preset)")
    parser.add_argument("--batch-size", type=positive_int, help="global batch size (preset)")
    parser.add_argument("--width", type=positive_int,
                        help="ResNet first-stage channels, 64 in the paper (preset)")
    parser.add_argument("--train-limit", type=positive_int,
                        help="use only the first N training examples (preset: all)")
    parser.add_argument("--steps-per-epoch", type=positive_int,
                        help="cap the steps of every epoch; the next epoch continues the data "
                        "where the last one stopped")
    parser.add_argument("--eval-limit", type=positive_int,
                        help="evaluate on only the first N test examples (default: all)")
    parser.add_argument("--data-dir", help="TFDS data folder (default: $TFDS_DATA_DIR)")
    parser.add_argument("--logdir", help="where logs, checkpoints and tables go (one run at a time)")
    parser.add_argument("--seed", type=seed_type, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --logdir from its last checkpoint (an error if "
                        "there is none)")
    parser.add_argument("--resume-if-present", action="store_true",
                        help="like --resume, but start afresh what --logdir holds no run of")
    parser.add_argument("--stop-after", type=positive_int, metavar="N",
                        help="train at most N epochs now, then stop; the schedule still spans "
                        "--epochs and --resume continues (for time-limited jobs)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2),
                        help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch "
                        "(default: 1 on a terminal, 2 into a file or pipe)")
    return add_runtime_flags(parser)


def preset_value(value, dataset):
    """A preset's value for `dataset`: a `PerDataset` picks the data set's entry (else its
    default); any other value is the same for every data set."""
    return value.get(dataset, value.default) if isinstance(value, PerDataset) else value


class PerDataset(dict):
    """A preset value that depends on the data set, e.g. epochs: full MNIST (60,000 images) needs
    fewer than the 5,000-image CIFAR-10 subset. `default` serves every data set not listed."""

    def __init__(self, default, **by_dataset):
        super().__init__(by_dataset)
        self.default = default


def apply_preset(args, presets):
    """Fills every unset flag from `presets[args.preset]` (per data set where the preset says
    so); settles --resume-if-present."""
    if args.preset not in presets:
        from great_tf.errors import GreatError

        raise GreatError(f"--preset {args.preset} is not defined for this data set: choose one of "
                         f"{', '.join(presets)}")
    for key, value in presets[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, preset_value(value, getattr(args, "dataset", None)))
    if getattr(args, "resume_if_present", False):
        args.resume = True  # resumes whatever is there; `great_tf.runs` skips the "no run" error
    return args
