"""keras-tuner sweep of GRE(AT+CE)'s beta_max and alpha_max: how much robustness each buys, and at
what cost in clean accuracy.

    python -m tuning.defense --dataset mnist --preset medium                  # the grid below
    python -m tuning.defense --dataset mnist --betas 1,2,5,10 --alphas 1      # beta alone
    python -m tuning.defense --dataset cifar10 --tuner bayesian --max-trials 6

The objective is the standard AutoAttack accuracy (APGD-CE, APGD-T, FAB-T, Square; `AA`) on a
stratified, seeded validation split carved from the training set, subject to clean validation
accuracy within `--clean-drop` points (default 2) of a baseline network trained on the same split
with the same recipe. A trial that breaks the constraint scores AA - 100, so it never beats a
feasible one. The sweep first trains that baseline (`<logdir>/baseline`), then the trials. It
reports every trial and the frontier: the trials that no other trial beats in both clean and AA
accuracy. Tuner state, per-epoch trial checkpoints and resuming work as in `tuning.distill`.
"""

import argparse
import os

from great_tf.errors import GreatError
from trainers import flags
from trainers.defense import PRESETS
from tuning import common

MODES = ("great+ce", "greace", "great")
# Our grid: it holds the paper's values (alpha_max 1; beta_max 2 on CIFAR-10, 10 on SVHN).
GRID = {"beta_max": [0.5, 2.0, 10.0], "alpha_max": [0.3, 1.0, 3.0]}
COLUMNS = ["trial", "alpha_max", "beta_max", "val clean %", "val AA %", "feasible", "frontier",
           "objective"]


def parse_args(argv=None):
    parser = flags.OneLineParser(prog="python -m tuning.defense", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist", help="any prepared TFDS image-classification set")
    parser.add_argument("--mode", default="great+ce", choices=MODES, help="the defense swept")
    parser.add_argument("--betas", type=flags.number_list(flags.nonnegative_float), help="beta_max values (default 0.5,2,10)")
    parser.add_argument("--alphas", type=flags.number_list(flags.nonnegative_float), help="alpha_max values (default 0.3,1,3)")
    parser.add_argument("--tuner", default="grid", choices=("grid", "bayesian"))
    parser.add_argument("--max-trials", type=flags.positive_int,
                        help="trials (grid: default the whole grid; bayesian: 10)")
    parser.add_argument("--clean-drop", type=flags.nonnegative_float, default=2.0,
                        help="allowed clean-accuracy loss against the baseline, in points (default 2)")
    parser.add_argument("--val-fraction", type=flags.fraction_type, default=0.1,
                        help="stratified share of the training set held out for the objective")
    parser.add_argument("--preset", default="small", choices=tuple(PRESETS))
    parser.add_argument("--epochs", type=flags.positive_int)
    parser.add_argument("--batch-size", type=flags.positive_int)
    parser.add_argument("--width", type=flags.positive_int)
    parser.add_argument("--train-limit", type=flags.positive_int)
    parser.add_argument("--steps-per-epoch", type=flags.positive_int)
    parser.add_argument("--attack-limit", type=flags.positive_int,
                        help="validation images attacked (preset: as the trainer's)")
    parser.add_argument("--apgd-iterations", type=flags.positive_int)
    parser.add_argument("--apgd-targets", type=flags.positive_int)
    parser.add_argument("--square-queries", type=flags.positive_int)
    parser.add_argument("--eps", type=flags.nonnegative_float, help="attack eps (default: the data set's, as the trainer)")
    parser.add_argument("--pixel-scale", type=flags.positive_float, default=1.0)
    parser.add_argument("--fgsm-train-eps", type=flags.nonnegative_float, default=None, help=argparse.SUPPRESS)
    common.add_sweep_flags(parser)
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    # What great_tf.defense.runs reads and a sweep does not vary: AA only, no curves, no SPSA.
    args.beta_max, args.alpha_max, args.attacks, args.eps_grid = None, None, "strong", []
    args.iterations, args.restarts, args.eps_iter, args.spsa_samples, args.spsa_limit = 10, 1, None, 1, None
    args.resume, args.resume_if_present, args.stop_after = True, True, None
    args.logdir = args.logdir or os.path.join("runs", "tuning", "defense", args.dataset)
    return args


def search_space(args):
    return {"beta_max": args.betas or GRID["beta_max"], "alpha_max": args.alphas or GRID["alpha_max"]}


def load(args):
    """(train split, validation split) of the data set's training images, stratified and seeded."""
    from great_tf.data import load_classification, stratified_split

    data = load_classification(args.dataset, "train", args.data_dir, args.train_limit)
    train, val = stratified_split(data, data[1], args.val_fraction, args.seed)
    print(f"{len(train[1])} training and {len(val[1])} validation images (held out, seed {args.seed})",
          flush=True)
    return train, val


def build_model(mode, args, train, alpha_max, beta_max):
    """The defense model of `mode` in the strategy's scope, every trial from the same weights."""
    import keras

    from great_tf.data import num_examples
    from great_tf.defense import build_defense
    from great_tf.defense.runs import unit

    keras.utils.set_random_seed(args.seed)
    steps = flags.epoch_steps(num_examples(train), args)
    return flags.build_in_scope(args, lambda: build_defense(
        mode, train[0].shape[1:], args.num_classes, args.width, steps, args.epochs,
        alpha_max=alpha_max, beta_max=beta_max, fgsm_eps=unit(args.fgsm_train_eps, args)))


def fit_and_score(model, args, train, val, run_dir, settings):
    """Trains `model` in `run_dir` (resuming) and returns (clean %, AA %) on the validation split."""
    from great_tf.data import num_examples
    from great_tf.data.augment import augment_images
    from great_tf.defense.runs import attack_settings
    from great_tf.evaluation import evaluate_model

    steps = flags.epoch_steps(num_examples(train), args)
    flags.prepare_run_dir(run_dir, args, {"method": model.mode, **settings})
    flags.fit_resumable(model, run_dir, args, train, None, args.epochs, steps,
                        augment=augment_images(pad=4, flip=False), tensorboard=False)
    report = evaluate_model(model.main, train, val, attack_settings(args), group="strong",
                            attack_limit=args.attack_limit, diagnostics=False, saliency_images=0)
    return report.row["No attack"], report.row["AA"]


def baseline_clean(args, train, val):
    """The baseline's clean validation accuracy (trained once per logdir, then read back)."""
    run_dir = os.path.join(args.logdir, "baseline")
    done = flags.load_result(run_dir)
    if done is None:
        print("training the baseline the constraint is measured against...", flush=True)
        model = build_model("baseline", args, train, 0.0, 0.0)
        clean, aa = fit_and_score(model, args, train, val, run_dir, {})
        done = {"val clean %": float(clean), "val AA %": float(aa),
                "attacked images": min(args.attack_limit or len(val[1]), len(val[1]))}
        flags.save_result(run_dir, done)
    return done


def make_hypermodel(args, train, val, limit):
    import keras_tuner as kt

    grid = search_space(args)

    class DefenseHyperModel(kt.HyperModel):
        def build(self, hp):
            settings = {name: hp.Choice(name, values) for name, values in grid.items()}
            return build_model(args.mode, args, train, settings["alpha_max"], settings["beta_max"])

        def fit(self, hp, model, *fit_args, trial_dir=None, **kwargs):
            clean, aa = fit_and_score(model, args, train, val, os.path.join(trial_dir, "run"), hp.values)
            return {"objective": aa if clean >= limit else aa - 100.0, "val_clean": clean, "val_aa": aa}

    return DefenseHyperModel(name=f"defense_{args.mode}")


def frontier(rows):
    """Marks each row whose (clean, AA) no other row beats in both (ties kept)."""
    for row in rows:
        row["frontier"] = not any(  # plain bools: the table is written as JSON
            o["val clean %"] >= row["val clean %"] and o["val AA %"] >= row["val AA %"]
            and (o["val clean %"], o["val AA %"]) != (row["val clean %"], row["val AA %"]) for o in rows)
    return rows


def trial_rows(trials, limit):
    rows = [{"trial": n, "alpha_max": float(hp["alpha_max"]), "beta_max": float(hp["beta_max"]),
             "val clean %": float(m["val_clean"]), "val AA %": float(m["val_aa"]),
             "feasible": bool(m["val_clean"] >= limit), "objective": float(m["objective"])}
            for n, hp, m in trials]
    return frontier(rows)


def write_tables(rows, base, limit, args):
    from great_tf.reporting import write_table

    stem = os.path.join(args.logdir, f"sweep_{args.mode}")
    feasible = [r for r in rows if r["feasible"]]
    best = max(feasible, key=lambda r: r["val AA %"]) if feasible else None
    notes = [
        f"{args.mode} on {args.dataset}: {args.epochs} epochs, batch {args.batch_size}, width "
        f"{args.width}; {args.tuner} search over {search_space(args)}. Validation: a stratified "
        f"{args.val_fraction:g} of the training set (seed {args.seed}); AA on its first "
        f"{args.attack_limit or 'all'} images, eps {args.eps:g} on the [0, {args.pixel_scale:g}] scale.",
        f"Baseline (same split and recipe): clean {base['val clean %']:.2f} %, AA {base['val AA %']:.2f} %. "
        f"Feasible: clean >= {limit:.2f} % (at most {args.clean_drop:g} points below).",
        ("Best feasible: " + (f"trial {best['trial']} (alpha_max {best['alpha_max']:g}, beta_max "
                              f"{best['beta_max']:g}): AA {best['val AA %']:.2f} %." if best
                              else "none: every trial costs more clean accuracy than allowed.")),
        "frontier: no other trial has both higher clean and higher AA accuracy.",
    ]
    text = write_table(rows, COLUMNS, stem, title=f"Sweep of {args.mode}'s alpha_max and beta_max",
                       notes=notes, formats={"val clean %": ".2f", "val AA %": ".2f", "objective": ".2f"})
    plot_frontier(rows, base, limit, f"{stem}.png", args)
    print("\n" + text + f"\n\n(written to {stem}.md, .csv, .json and .png)")
    return text


def plot_frontier(rows, base, limit, path, args):
    from great_tf.reporting import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        ax.scatter(r["val clean %"], r["val AA %"], color="C1" if r["frontier"] else "C0")
        ax.annotate(f"a{r['alpha_max']:g} b{r['beta_max']:g}", (r["val clean %"], r["val AA %"]), fontsize=8)
    ax.scatter(base["val clean %"], base["val AA %"], marker="*", s=150, color="k", label="baseline")
    ax.axvline(limit, linestyle="--", color="gray", label=f"baseline - {args.clean_drop:g} points")
    ax.set_xlabel("clean validation accuracy %")
    ax.set_ylabel("AA validation accuracy %")
    ax.set_title(f"{args.mode} on {args.dataset}: frontier in orange")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    import keras_tuner as kt

    from great_tf.defense import FGSM_TRAIN_EPS
    from great_tf.defense.runs import check_args

    args = parse_args(argv)
    flags.setup_runtime(args)
    check_args(args)
    if args.fgsm_train_eps is None:
        args.fgsm_train_eps = FGSM_TRAIN_EPS * args.pixel_scale
    train, val = load(args)
    base = baseline_clean(args, train, val)
    limit = base["val clean %"] - args.clean_drop
    tuner = common.make_tuner(make_hypermodel(args, train, val, limit), kt.Objective("objective", "max"),
                              args.tuner, args.max_trials, args.logdir, f"{args.mode}_{args.dataset}",
                              args.overwrite, args.seed)
    if args.max_trials:
        tuner.oracle.max_trials = args.max_trials
    print(f"[{args.mode}] searching {search_space(args)} ({args.tuner}); objective: validation AA with "
          f"clean >= {limit:.2f} %; state in {tuner.project_dir}", flush=True)
    tuner.search(verbose=args.verbose)
    trials = common.completed_trials(tuner, ("objective", "val_clean", "val_aa"))
    if not trials:
        raise GreatError("the sweep finished no trial: see the log above")
    rows = trial_rows(trials, limit)
    write_tables(rows, base, limit, args)
    return rows


if __name__ == "__main__":
    common.run_cli(main)
