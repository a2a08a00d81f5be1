"""Multi-task GREAT on noisy CIFAR-10 next to its baselines (paper Algorithm 3, Table 4).

    python -m trainers.mtl --dataset cifar10_noisy                 # all four methods, small preset
    python -m trainers.mtl --method great --preset paper --data-dir ~/tensorflow_datasets
"""

import os

from trainers import flags

PRESETS = {
    # Minutes on 2 CPU cores for all four methods, on the real CIFAR-10 (sub)set.
    "small": {"epochs": 2, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": None},
    # The paper's supplement: ResNet-18 (width 64), Adam 1e-3 with the poly policy, 50 epochs.
    # The paper does not give the batch size; 128 is our choice.
    "paper": {"epochs": 50, "batch_size": 128, "width": 64, "train_limit": None, "steps_per_epoch": None},
}
COLUMNS = ["method", "class error %", "colour RMSE", "edge RMSE", "auto RMSE", "train s", "images/s"]
PAPER_TABLE4 = {  # CIFAR-10 rows of the paper's Table 4, for reference beside ours.
    "equal": (24.0, 0.131, 0.349, 0.113),
    "uncertainty": (26.6, 0.111, 0.270, 0.090),
    "gradnorm": (23.5, 0.116, 0.270, 0.091),
    "great": (24.2, 0.114, 0.252, 0.087),
}


def parse_args(argv=None):
    from great_tf.mtl import METHODS

    parser = flags.base_parser(
        "python -m trainers.mtl", "Multi-task GREAT (Algorithm 3) and its baselines.",
        datasets=("cifar10_noisy",), methods=METHODS, default_dataset="cifar10_noisy")
    parser.add_argument("--gradnorm-alpha", type=float, default=0.6)
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "mtl", args.dataset)
    return args


def load_data(args):
    from great_tf.data import load_cifar10_noisy

    print(f"loading {args.dataset} (noise and Canny edges are computed once, then cached)...", flush=True)
    train = load_cifar10_noisy("train", args.data_dir, args.seed, args.train_limit)
    test = load_cifar10_noisy("test", args.data_dir, args.seed, args.eval_limit)
    return train, test


def train_method(method, args, train, test):
    """Trains one method (resuming if asked) and returns its row of the comparison."""
    import keras

    from great_tf import mtl
    from great_tf.data import eval_dataset, num_examples, take, train_dataset
    from great_tf.summaries import MultiTaskSummaries

    run_dir = os.path.join(args.logdir, method)
    flags.prepare_run_dir(run_dir, args, {"method": method, "gradnorm_alpha": args.gradnorm_alpha})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None:
        print(f"[{method}] finished earlier, result kept: {run_dir}")
        return done

    keras.utils.set_random_seed(args.seed)
    steps = flags.epoch_steps(num_examples(train), args)
    model = flags.build_in_scope(args, lambda: mtl.compile_mtl(
        mtl.build_mtl_model(method, train[0].shape[1:], width=args.width,
                            gradnorm_alpha=args.gradnorm_alpha), steps, args.epochs))
    test_ds = eval_dataset(test, args.batch_size)
    print(f"[{method}] training {args.epochs} epochs of {steps} steps, batch {args.batch_size}, "
          f"width {args.width}; logs in {run_dir}", flush=True)
    seconds, epochs_now = flags.fit_resumable(
        model, run_dir, args,
        lambda initial_epoch: train_dataset(train, args.batch_size, args.seed, args.epochs, initial_epoch),
        test_ds, args.epochs, steps, [MultiTaskSummaries(run_dir, probe=take(test, 32))])
    scores = model.evaluate(test_ds, return_dict=True, verbose=0)
    trained = epochs_now * steps * args.batch_size
    result = {
        "method": method,
        "class error %": float(scores["class_error"]),
        "colour RMSE": float(scores["colour_rmse"]),
        "edge RMSE": float(scores["edges_rmse"]),
        "auto RMSE": float(scores["auto_rmse"]),
        "train s": round(seconds, 1),
        "images/s": round(trained / seconds, 1) if trained else None,
    }
    flags.save_result(run_dir, result)
    return result


def write_comparison(rows, args):
    from great_tf.reporting import write_table

    test_set = f"first {args.eval_limit} examples of the " if args.eval_limit else ""
    notes = [
        f"Test set: {test_set}{args.dataset} test split. Settings: preset {args.preset}, "
        f"{args.epochs} epochs, batch {args.batch_size}, ResNet-18 width {args.width}, seed {args.seed}.",
        "Class error in %, the rest RMSE on [0, 1] images; lower is better everywhere.",
        "The paper's Table 4 (CIFAR-10, ResNet-18 width 64, 50 epochs, 50,000 training images): "
        + "; ".join(f"{m} {e} / {c} / {g} / {a}" for m, (e, c, g, a) in PAPER_TABLE4.items()) + ".",
    ]
    stem = os.path.join(args.logdir, "table4")
    text = write_table(rows, COLUMNS, stem, title="Multi-task learning on noisy CIFAR-10",
                       notes=notes, formats={"class error %": ".2f", "train s": ".1f", "images/s": ".1f"})
    print("\n" + text + f"\n\n(written to {stem}.md, .csv and .json)")


def main(argv=None):
    from great_tf.mtl import METHODS

    args = parse_args(argv)
    flags.setup_runtime(args)
    methods = METHODS if args.method == "all" else (args.method,)
    train, test = load_data(args)
    rows = [train_method(m, args, train, test) for m in methods]
    write_comparison(rows, args)
    return rows


if __name__ == "__main__":
    flags.run_cli(main)
