"""keras-tuner sweeps over the distillation methods' hyperparameters: how much searching each needs.

    python -m tuning.distill --search distill --teacher PATH                 # T x alpha, grid
    python -m tuning.distill --search great --teacher PATH --tuner bayesian --max-trials 4
    python -m tuning.distill --search all --teacher PATH --fraction 0.05     # every method, sparse

The objective is the student's accuracy on a held-out validation split carved (stratified,
seeded) from the training set; test accuracy is recorded for every trial but never used to choose.
Every trial starts from the same student initialisation, so the spread across trials measures the
hyperparameters alone. Tuner state lives in `<logdir>/tuner/<project>`: running the same command
again resumes a stopped sweep, and an interrupted trial continues from its last finished epoch
(each trial checkpoints every epoch like a trainer's run, so a resumed trial gives the result of an
uninterrupted one: docs/design.md#resume); `--overwrite` starts over. One sweep per --logdir at a
time. Flags take `--strategy`, `--cpu-replicas`, `--jit` and `--mixed-precision` like the trainers.

The paper's claim under test: GREAT's single alpha = 0.1 transfers across pairs and regimes,
while distillation's T and alpha must be searched per pair and regime.
"""

import argparse
import os

import numpy as np

from great_tf.errors import GreatError
from trainers import flags
from tuning import common

SEARCHES = ("distill", "great", "sobolev")
GRIDS = {  # our grids; each holds the paper's values (distill: (0.1, 20), (0.99, 20); GREAT: 0.1)
    "distill": {"temperature": [1.0, 2.0, 5.0, 10.0, 20.0], "alpha": [0.1, 0.5, 0.9, 0.99]},
    "great": {"alpha": [0.01, 0.05, 0.1, 0.2, 0.5]},
    "sobolev": {"alpha": [0.01, 0.1, 0.5, 0.9]},
}
PRESETS = {
    "small": {"epochs": 3, "batch_size": 64, "width": 16, "student_width": None, "train_limit": None,
              "steps_per_epoch": None},
    # The evidence sweeps of docs/results.md: the trainer's medium preset (dense; the sparse sweep
    # gives --epochs 200 as the trainer's sparse regime does).
    "medium": {"epochs": 20, "batch_size": 64, "width": 16, "student_width": None, "train_limit": None,
               "steps_per_epoch": None},
    "paper": {"epochs": 50, "batch_size": 128, "width": 64, "student_width": None, "train_limit": None,
              "steps_per_epoch": None},
}
NEAR_BEST = 0.5  # points: "within 0.5 points of its best" (the measure of search effort)
COLUMNS = ["method", "regime", "trials run", "trials to best", "trials to within 0.5",
           "random trials to within 0.5", "best val %",
           "test % at best",
           "best hyperparameters", "paper default val %", "val % min", "val % max", "val % std"]


def parse_args(argv=None):
    from great_tf.distill.experiment import STUDENTS

    parser = flags.OneLineParser(prog="python -m tuning.distill", description=__doc__.split("\n")[0])
    parser.add_argument("--search", default="all", choices=(*SEARCHES, "all"))
    parser.add_argument("--tuner", default="grid", choices=("grid", "bayesian"))
    parser.add_argument("--max-trials", type=flags.positive_int,
                        help="trials per method (grid: default the whole grid; bayesian: 10)")
    parser.add_argument("--teacher", help="path of a saved teacher (.keras)")
    parser.add_argument("--student", default="cnn5", choices=STUDENTS)
    parser.add_argument("--student-width", type=flags.positive_int)
    parser.add_argument("--width", type=flags.positive_int,
                        help="ResNet-18 student width if --student-width is unset (preset)")
    parser.add_argument("--dataset", default="cifar10", help="any prepared TFDS image-classification set")
    parser.add_argument("--fraction", type=flags.fraction_type, default=1.0,
                        help="share of the (non-validation) training set: 1.0 dense, 0.05 sparse")
    parser.add_argument("--val-fraction", type=flags.fraction_type, default=0.1,
                        help="stratified share of the training set held out for the objective")
    parser.add_argument("--alphas", type=flags.number_list(flags.nonnegative_float), help="override the alpha grid")
    parser.add_argument("--temperatures", type=flags.number_list(flags.positive_float), help="override the temperature grid")
    parser.add_argument("--preset", default="small", choices=tuple(PRESETS))
    parser.add_argument("--epochs", type=flags.positive_int)
    parser.add_argument("--batch-size", type=flags.positive_int)
    parser.add_argument("--train-limit", type=flags.positive_int)
    parser.add_argument("--steps-per-epoch", type=flags.positive_int)
    parser.add_argument("--image-size", type=int, default=64, choices=(64, 224))
    common.add_sweep_flags(parser)
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "tuning", args.dataset)
    return args


def search_space(method, args):
    grid = dict(GRIDS[method])
    if method == "distill" and args.alphas and max(args.alphas) > 1.0:
        raise GreatError(f"--alphas {max(args.alphas):g}: Hinton distillation's alpha mixes CE and "
                         f"the soft loss, (1 - alpha) CE + alpha T^2 KL, and must be in [0, 1]")
    if args.alphas:
        grid["alpha"] = args.alphas
    if args.temperatures and "temperature" in grid:
        grid["temperature"] = args.temperatures
    return grid


def make_hypermodel(method, args, data, train, val, teacher):
    """A keras-tuner HyperModel: build() makes the student (same init every trial), fit() trains
    it and returns validation (the objective) and test accuracy."""
    import keras
    import keras_tuner as kt

    from great_tf import distill
    from great_tf.data import eval_dataset
    from great_tf.distill.experiment import build_discriminator, build_network, student_width

    grid = search_space(method, args)
    steps = flags.epoch_steps(len(train[1]), args)
    # A trial is a run of its own: resumed from its checkpoint when the sweep restarts, never cut
    # short by --stop-after (the tuner would record a half-trained score).
    trial_args = argparse.Namespace(**{**vars(args), "resume": True, "resume_if_present": True,
                                       "stop_after": None})

    class DistillHyperModel(kt.HyperModel):
        def build(self, hp):
            params = {name: hp.Choice(name, values) for name, values in grid.items()}
            keras.utils.set_random_seed(args.seed)
            width = student_width(args.student, args.student_width, args.width)

            def build_trial():
                student = build_network(args.student, data.input_shape, data.num_classes, width)
                disc = build_discriminator(args.student, data.input_shape, width) if method == "great" else None
                model = distill.build_distiller(method, teacher, student, disc, **params)
                return distill.compile_distiller(model, steps, args.epochs)

            return flags.build_in_scope(args, build_trial)

        def fit(self, hp, model, *fit_args, trial_dir=None, **kwargs):
            # The tuner's own best-epoch checkpoints are not needed (we report per-trial scores);
            # ours, one per epoch, let an interrupted trial continue where it stood.
            run_dir = os.path.join(trial_dir, "run")
            flags.prepare_run_dir(run_dir, trial_args, {"method": method, **hp.values})
            flags.fit_resumable(model, run_dir, trial_args, train, None, args.epochs, steps,
                                augment=data.augment, tensorboard=False)
            return {
                "val_accuracy": score(model, eval_dataset(val, args.batch_size)),
                "test_accuracy": score(model, data.test_dataset(args.batch_size)),
            }

    return DistillHyperModel(name=f"distill_{method}")


def score(model, dataset):
    return 100.0 * float(model.evaluate(dataset, return_dict=True, verbose=0)["accuracy"])


def make_tuner(method, args, hypermodel):
    import keras_tuner as kt

    project = f"{method}_{args.student}_{100 * args.fraction:g}pct"
    return common.make_tuner(hypermodel, kt.Objective("val_accuracy", direction="max"), args.tuner,
                             args.max_trials, args.logdir, project, args.overwrite, args.seed)


def completed_trials(tuner):
    """[(trial number from 1, hyperparameters, val %, test %)] of finished trials, in run order."""
    return [(n, hp, m["val_accuracy"], m["test_accuracy"])
            for n, hp, m in common.completed_trials(tuner, ("val_accuracy", "test_accuracy"))]


PAPER_DEFAULTS = {"great": [{"alpha": 0.1}],
                  "distill": [{"alpha": 0.1, "temperature": 20.0}, {"alpha": 0.99, "temperature": 20.0}]}


def paper_default(method, fraction, trials):
    """The validation accuracy of the paper's setting for this regime, if the sweep ran it."""
    wanted = PAPER_DEFAULTS.get(method, [])
    if method == "distill":
        wanted = wanted[:1] if fraction == 1.0 else wanted[1:]
    for _, hp, val, _ in trials:
        if any(all(np.isclose(hp.get(k, np.nan), v) for k, v in w.items()) for w in wanted):
            return val
    return None


def random_trials_to_near_best(vals, near=NEAR_BEST):
    """The expected number of trials a random search over the same settings needs to reach one
    within `near` points of the best: drawing N settings without replacement, k of them good, the
    first good one comes at (N + 1) / (k + 1) on average. Unlike the grid's own run order, this does
    not depend on the order in which the tuner walks the grid."""
    vals = np.asarray(vals, dtype=float)
    good = int(np.sum(vals >= vals.max() - near))
    return (len(vals) + 1) / (good + 1)


def summarize(method, args, trials):
    from great_tf.distill import METHOD_NAMES

    if not trials:
        raise GreatError(f"the {method} sweep finished no trial: see the log above")
    vals = np.array([t[2] for t in trials])
    best = trials[int(np.argmax(vals))]  # the first trial to reach the best score
    return {
        "method": METHOD_NAMES[method], "regime": f"{100 * args.fraction:g} %",
        "trials run": len(trials), "trials to best": best[0],
        "trials to within 0.5": next(t[0] for t in trials if t[2] >= best[2] - NEAR_BEST),
        "random trials to within 0.5": random_trials_to_near_best(vals),
        "best val %": best[2],
        "test % at best": best[3],
        "best hyperparameters": ", ".join(f"{k} {v:g}" for k, v in sorted(best[1].items())),
        "paper default val %": paper_default(method, args.fraction, trials),
        "val % min": float(vals.min()), "val % max": float(vals.max()), "val % std": float(vals.std()),
    }


def run_search(method, args, data, train, val, teacher):
    tuner = make_tuner(method, args, make_hypermodel(method, args, data, train, val, teacher))
    if args.max_trials:  # a reloaded oracle keeps its old limit: this lets a sweep be extended
        tuner.oracle.max_trials = args.max_trials
    done = len(completed_trials(tuner))
    if done:
        print(f"[{method}] resuming: {done} trial(s) finished earlier are kept", flush=True)
    print(f"[{method}] searching {search_space(method, args)} ({args.tuner}), objective: "
          f"validation accuracy; state in {tuner.project_dir}", flush=True)
    tuner.search(verbose=args.verbose)
    trials = completed_trials(tuner)
    return summarize(method, args, trials), [
        {"method": method, "trial": n, **hp, "val %": v, "test %": t} for n, hp, v, t in trials]


def load(args):
    from great_tf import distill
    from great_tf.data import stratified_split
    from great_tf.distill.experiment import load_distill_data

    data = load_distill_data(args.dataset, args.data_dir, args.train_limit)
    with args.distribution.scope():
        teacher = distill.load_teacher(args.teacher, data.num_classes, data.input_shape)
    rest, val = stratified_split(data.train, data.train[1], args.val_fraction, args.seed)
    from great_tf.data import stratified_subset

    train = stratified_subset(rest, rest[1], args.fraction, args.seed)
    print(f"{len(train[1])} training, {len(val[1])} validation (held out, seed {args.seed}), "
          f"{len(data.test[1])} test images", flush=True)
    return data, train, val, teacher


def write_tables(rows, trial_rows, args):
    from great_tf.distill.runs import step_cap_note, training_set_note
    from great_tf.reporting import write_table

    notes = [
        f"Student {args.student} on {args.dataset}, {args.epochs} epochs{step_cap_note(args)}, batch "
        f"{args.batch_size}, {args.tuner} search; objective: accuracy on a stratified "
        f"{args.val_fraction:g} of the {training_set_note(args)} held out (seed {args.seed}); test "
        f"accuracy of the chosen trial reported separately. Every trial starts from the same student "
        f"weights.",
        "trials to best: the trial (in run order) that first reached the best validation accuracy; "
        "trials to within 0.5: the first within 0.5 points of it; random trials to within 0.5: "
        "how many a random search over the same settings needs on average, (N + 1) / (k + 1) "
        "with k of the N settings within 0.5 points of the best. "
        "paper default: the paper's setting (GREAT alpha 0.1; distillation alpha 0.1, T 20 dense "
        "and alpha 0.99, T 20 sparse) when the grid holds it.",
    ]
    stem = os.path.join(args.logdir, f"sweep_{args.student}_{100 * args.fraction:g}pct")
    text = write_table(rows, COLUMNS, stem, title="Hyperparameter sweeps (keras-tuner)", notes=notes,
                       formats={**{c: ".2f" for c in COLUMNS if "%" in c},
                                "random trials to within 0.5": ".1f"})
    keys = sorted({k for r in trial_rows for k in r} - {"method", "trial", "val %", "test %"})
    write_table(trial_rows, ["method", "trial", *keys, "val %", "test %"], stem + "_trials",
                title="Every trial", formats={"val %": ".2f", "test %": ".2f"})
    print("\n" + text + f"\n\n(written to {stem}.md, .csv, .json; every trial in {stem}_trials.md)")
    return text


def main(argv=None):
    args = parse_args(argv)
    flags.setup_runtime(args)
    data, train, val, teacher = load(args)
    methods = SEARCHES if args.search == "all" else (args.search,)
    rows, trial_rows = [], []
    for method in methods:
        row, trials = run_search(method, args, data, train, val, teacher)
        rows.append(row)
        trial_rows += trials
    write_tables(rows, trial_rows, args)
    return rows


if __name__ == "__main__":
    common.run_cli(main)
