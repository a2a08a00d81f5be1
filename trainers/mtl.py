"""Multi-task learning: GREAT (Algorithm 3) next to every registered method (Table 4), with Δm
against the single-task baselines and mean ± standard deviation over seeds.

    python -m trainers.mtl --dataset cifar10_noisy                 # every method, small preset
    python -m trainers.mtl --methods equal,great,pcgrad --seeds 3  # a set of methods, 3 seeds
    python -m trainers.mtl --method single                         # the single-task baselines
    python -m trainers.mtl --method great --preset paper --data-dir ~/tensorflow_datasets
    python -m trainers.mtl --dataset nyu_depth_v2                  # NYUv2, its own presets

The experiment itself (runs, seeds, cached baselines) is `great_tf.mtl.experiment`; the tables
(Δm, mean ± std) are `great_tf.mtl.report`.
"""

import os

from trainers import flags

PRESETS = {
    # Every method (13) and the single-task baselines (4 networks) within about 10 minutes on 2
    # CPU cores (`--method all`; --seeds N takes N times as long): ResNet-18 width 8, batch 64,
    # 2 epochs of 40 steps, the second continuing the data where the first stopped (5,120
    # images: one pass over the 5,000-image CIFAR-10 subset). Tracing each method's step costs
    # 10-35 s of a run, so fewer steps would save little. Estimated from single-method runs:
    # per run ~35 s (loss weighting), ~55 s (parameter-space gradient methods), ~65 s (GREAT),
    # ~80 s (the four single-task networks) on a loaded machine.
    "small": {"epochs": 2, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": 40},
    # The evidence runs of docs/results.md (#14): 15 full passes over the 5,000-image subset
    # (78 steps of 64) at width 8. Measured on 2 CPU cores: 3.2-6.6 min of training per method
    # (the loss weightings 3.2-3.9, the gradient methods 4.6-6.6), 8.4 min for the four
    # single-task networks, 68 min for `--method all` and one seed.
    "medium": {"epochs": 15, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": None},
    # The paper's supplement: ResNet-18 (width 64), Adam 1e-3 with the poly policy, 50 epochs.
    # The paper does not give the batch size; 128 is our choice.
    "paper": {"epochs": 50, "batch_size": 128, "width": 64, "train_limit": None, "steps_per_epoch": None},
}


def benchmark_options():
    """{option: (default, benchmarks that take it)} over every registered benchmark."""
    from great_tf.mtl.benchmarks import available_benchmarks, get_benchmark

    found = {}
    for name in available_benchmarks():
        for key, default in get_benchmark(name).options.items():
            found.setdefault(key, (default, []))[1].append(name)
    return found


# Float hyperparameters divided by (a temperature, a Dirichlet concentration): 0 is refused too.
DIVISORS = ("temperature", "concentration")


def hyperparameter_type(key, default):
    """The flag type of a method's hyperparameter: every float one (a loss weight, a rate, a
    norm) is finite and >= 0, a divisor > 0, a seed in the seeds' range; others parse as their
    default's type (and the method checks their values)."""
    if isinstance(default, float):
        return flags.positive_float if key in DIVISORS else flags.nonnegative_float
    if key == "seed":
        return flags.seed_type
    return type(default)


def parse_args(argv=None):
    from great_tf.mtl import available_methods, method_class
    from great_tf.mtl.benchmarks import available_benchmarks, get_benchmark
    from great_tf.mtl.experiment import available_choices

    parser = flags.base_parser(
        "python -m trainers.mtl", "Multi-task GREAT (Algorithm 3) and the methods it is compared with.",
        datasets=available_benchmarks(), methods=available_choices(), default_dataset="cifar10_noisy")
    parser.set_defaults(method=None)  # "all" unless --methods picks a set
    parser.add_argument("--methods", type=flags.choice_list(available_choices()),
                        help="comma-separated methods to run side by side, e.g. equal,great,pcgrad "
                        "(instead of --method); 'single' trains the single-task baselines")
    parser.add_argument("--seeds", type=flags.positive_int, default=1,
                        help="run every method with seeds --seed .. --seed+N-1 and report mean ± "
                        "std (default 1)")
    for key, (default, benchmarks) in benchmark_options().items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(default),
                            help=f"{', '.join(benchmarks)} only: {key} (preset; default {default})")
    for name in available_methods():
        for key, default in method_class(name).hyperparameters.items():
            parser.add_argument(f"--{name}-{key.replace('_', '-')}", type=hyperparameter_type(key, default),
                                help=f"{name}: {key} (default {default}, or the data set's)")
    args = parser.parse_args(argv)
    benchmark = get_benchmark(args.dataset)
    presets = {**PRESETS, **benchmark.presets}
    if benchmark.presets and "medium" not in benchmark.presets:
        del presets["medium"]  # the CIFAR-sized medium preset means nothing for this data set
    flags.apply_preset(args, presets)
    args.options = benchmark_settings(args, benchmark)
    args.logdir = args.logdir or os.path.join("runs", "mtl", args.dataset)
    return args


def benchmark_settings(args, benchmark):
    """{option: value} of `benchmark`'s own options (preset or flag); a one-line error for a flag
    of another data set's option."""
    from great_tf.errors import GreatError

    for key in benchmark_options():
        if key not in benchmark.options and getattr(args, key, None) is not None:
            raise GreatError(f"--{key.replace('_', '-')} does not apply to --dataset "
                             f"{args.dataset}: drop it")
    return {key: getattr(args, key) if getattr(args, key, None) is not None else default
            for key, default in benchmark.options.items()}


def hyperparameters(method, args, benchmark=None):
    """The method's hyperparameters: its `--<method>-<name>` flags, else the data set's value
    (`Benchmark.method_defaults`), else the method's own default."""
    from great_tf.mtl import method_class

    defaults = {**method_class(method).hyperparameters,
                **(benchmark.method_defaults.get(method, {}) if benchmark else {})}
    values = {}
    for key, default in defaults.items():
        given = getattr(args, f"{method}_{key}".replace("-", "_"), None)
        values[key] = default if given is None else given
    return values


def comparison_notes(args, benchmark, directions, methods, problem=None):
    """The table's notes: test set, settings, Δm (or why there is none), what is better, the
    paper's rows."""
    from great_tf.mtl.report import SINGLE

    test_split = benchmark.splits[1]
    test_set = f"first {args.eval_limit} examples of the " if args.eval_limit else ""
    options = "".join(f", {k} {v}" for k, v in args.options.items())
    seeds = (f"seeds {args.seed}..{args.seed + args.seeds - 1} (mean ± sample std)" if args.seeds > 1
             else f"seed {args.seed}")
    higher = [c for c, d in directions.items() if d == "higher"]
    notes = [
        f"Test set: {test_set}{args.dataset} {test_split} split"
        + (f" ({benchmark.description})" if benchmark.description else "") + ". "
        f"Settings: preset {args.preset}, {args.epochs} epochs, batch {args.batch_size}, "
        f"width {args.width}{options}, {seeds}.",
        ("Higher is better for " + ", ".join(higher) + "; lower for the rest." if higher
         else "Lower is better for every metric."),
        "Δm %: the mean relative change of every metric against the single-task networks (one "
        "network per task, same recipe), signed so that positive is better (Maninis et al. 2019; "
        "LibMTL's count_improvement); rows sorted by it.",
    ]
    if SINGLE not in methods:
        notes.append("No single-task baselines in this logdir with these settings: run with "
                     "--method single (or --method all) for Δm.")
    elif problem:
        notes.append(f"No Δm: {problem}.")
    labels = {}
    for task in benchmark.tasks:
        labels.update(task.metric_labels())
    if benchmark.paper_rows:
        names = list(next(iter(benchmark.paper_rows.values())))
        notes.append("The paper's Table 4 (" + ", ".join(labels.get(n, n) for n in names) + "): "
                     + "; ".join(f"{m} " + " / ".join(f"{v:g}" for v in vals.values())
                                 for m, vals in benchmark.paper_rows.items()) + ".")
    return notes


def write_comparison(rows, args, benchmark):
    """Adds Δm to the per-seed rows and writes table4.md/.csv/.json; returns the table's rows."""
    from great_tf.mtl.report import DELTA_M, add_delta_m, column_directions, write_comparison as write

    directions = column_directions(benchmark.tasks)
    rows, problem = add_delta_m(rows, directions)
    columns = ["method", *directions, DELTA_M, "train s", "images/s"]
    formats = {label: ".2f" if label.endswith("%") or label.endswith("°") else ".4f"
               for label in directions}
    formats.update({DELTA_M: ".2f", "train s": ".1f", "images/s": ".1f"})
    stem = os.path.join(args.logdir, "table4")
    methods = {r["method"] for r in rows}
    text, summary = write(stem, rows, columns, f"Multi-task learning on {args.dataset}",
                          comparison_notes(args, benchmark, directions, methods, problem), formats)
    print("\n" + text + f"\n\n(written to {stem}.md, .csv (per seed) and .json)")
    return summary


def main(argv=None):
    from great_tf.mtl import experiment
    from great_tf.mtl.benchmarks import get_benchmark

    args = parse_args(argv)
    methods = experiment.selected_methods(args.method, args.methods)
    flags.setup_runtime(args)
    benchmark = get_benchmark(args.dataset)
    settings = {m: hyperparameters(m, args, benchmark) for m in methods if m != experiment.SINGLE}
    rows = experiment.run_comparison(args, benchmark, methods, settings)
    if experiment.SINGLE not in methods:
        rows = experiment.cached_single_rows(args, benchmark) + rows
    return write_comparison(rows, args, benchmark)


if __name__ == "__main__":
    flags.run_cli(main)
