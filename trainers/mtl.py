"""Multi-task learning: GREAT (Algorithm 3) next to every registered method (Table 4).

    python -m trainers.mtl --dataset cifar10_noisy                 # every method, small preset
    python -m trainers.mtl --method great --preset paper --data-dir ~/tensorflow_datasets
"""

import os

from trainers import flags

PRESETS = {
    # Minutes on 2 CPU cores for the paper's four methods, on the real CIFAR-10 (sub)set.
    "small": {"epochs": 2, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": None},
    # The paper's supplement: ResNet-18 (width 64), Adam 1e-3 with the poly policy, 50 epochs.
    # The paper does not give the batch size; 128 is our choice.
    "paper": {"epochs": 50, "batch_size": 128, "width": 64, "train_limit": None, "steps_per_epoch": None},
}


def parse_args(argv=None):
    from great_tf import mtl
    from great_tf.mtl.benchmarks import available_benchmarks

    parser = flags.base_parser(
        "python -m trainers.mtl", "Multi-task GREAT (Algorithm 3) and the methods it is compared with.",
        datasets=available_benchmarks(), methods=mtl.available_methods(),
        default_dataset="cifar10_noisy")
    for name in mtl.available_methods():
        for key, default in mtl.method_class(name).hyperparameters.items():
            parser.add_argument(f"--{name}-{key.replace('_', '-')}", type=type(default),
                                default=default, help=f"{name}: {key} (default {default})")
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "mtl", args.dataset)
    return args


def hyperparameters(method, args):
    """The method's hyperparameters as given by its `--<method>-<name>` flags."""
    from great_tf import mtl

    return {key: getattr(args, f"{method}_{key}".replace("-", "_"))
            for key in mtl.method_class(method).hyperparameters}


def load_data(args, benchmark):
    print(f"loading {args.dataset}...", flush=True)
    train = benchmark.load("train", args.data_dir, args.seed, args.train_limit)
    test = benchmark.load("test", args.data_dir, args.seed, args.eval_limit)
    return train, test


def train_method(method, args, benchmark, train, test):
    """Trains one method (resuming if asked) and returns its row of the comparison."""
    import keras

    from great_tf import mtl
    from great_tf.data import eval_dataset, num_examples, take
    from great_tf.summaries import MultiTaskSummaries

    run_dir = os.path.join(args.logdir, method)
    settings = hyperparameters(method, args)
    flags.prepare_run_dir(run_dir, args, {"method": method, **{f"{method}_{k}": v for k, v in settings.items()}})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None:
        print(f"[{method}] finished earlier, result kept: {run_dir}")
        return done

    keras.utils.set_random_seed(args.seed)
    steps = flags.epoch_steps(num_examples(train), args)
    model = flags.build_in_scope(args, lambda: mtl.compile_mtl(
        mtl.build_mtl_model(method, train[0].shape[1:], benchmark.tasks, args.width,
                            network=benchmark.network, **settings), steps, args.epochs))
    test_ds = eval_dataset(test, args.batch_size)
    print(f"[{method}] training {args.epochs} epochs of {steps} steps, batch {args.batch_size}, "
          f"width {args.width}; logs in {run_dir}", flush=True)
    seconds, epochs_now = flags.fit_resumable(
        model, run_dir, args, train, test_ds, args.epochs, steps, [MultiTaskSummaries(run_dir, probe=take(test, 32))])
    scores = model.evaluate(test_ds, return_dict=True, verbose=0)
    trained = epochs_now * steps * args.batch_size
    result = {"method": method}
    for task in benchmark.tasks:
        result.update({label: float(scores[name]) for name, label in task.metric_labels().items()})
    result.update({"train s": round(seconds, 1),
                   "images/s": round(trained / seconds, 1) if trained else None})
    flags.save_result(run_dir, result)
    return result


def write_comparison(rows, args, benchmark):
    from great_tf.reporting import write_table

    labels = {}
    for task in benchmark.tasks:
        labels.update(task.metric_labels())
    test_set = f"first {args.eval_limit} examples of the " if args.eval_limit else ""
    notes = [
        f"Test set: {test_set}{args.dataset} test split. Settings: preset {args.preset}, "
        f"{args.epochs} epochs, batch {args.batch_size}, width {args.width}, seed {args.seed}.",
        "Class error in %, the rest RMSE on [0, 1] images; lower is better everywhere.",
    ]
    if benchmark.paper_rows:
        notes.append("The paper's Table 4 (" + ", ".join(labels.values()) + "): " + "; ".join(
            f"{m} " + " / ".join(f"{v:g}" for v in vals.values())
            for m, vals in benchmark.paper_rows.items()) + ".")
    columns = ["method", *labels.values(), "train s", "images/s"]
    stem = os.path.join(args.logdir, "table4")
    formats = {label: ".2f" if label.endswith("%") else ".4f" for label in labels.values()}
    text = write_table(rows, columns, stem, title=f"Multi-task learning on {args.dataset}",
                       notes=notes, formats={**formats, "train s": ".1f", "images/s": ".1f"})
    print("\n" + text + f"\n\n(written to {stem}.md, .csv and .json)")


def main(argv=None):
    from great_tf import mtl
    from great_tf.mtl.benchmarks import get_benchmark

    args = parse_args(argv)
    flags.setup_runtime(args)
    benchmark = get_benchmark(args.dataset)
    methods = mtl.available_methods() if args.method == "all" else (args.method,)
    train, test = load_data(args, benchmark)
    rows = [train_method(m, args, benchmark, train, test) for m in methods]
    write_comparison(rows, args, benchmark)
    return rows


if __name__ == "__main__":
    flags.run_cli(main)
