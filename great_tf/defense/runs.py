"""Running the defense experiment (Tables 1-2, Figure 4) from a run configuration: training each
mode, attacking it, the reports, re-evaluating a saved model. `trainers.defense` parses the flags
and calls these (docs/design.md#defense, #robustness); `args` is the trainer's parsed namespace.
"""

import os

from great_tf import runs

SALIENCY_IMAGES = 3


def check_args(args):
    """Fills eps and beta_max from the data set (the paper's values, or the rule by channels:
    great_tf.data.classification) and checks every eps against the pixel scale."""
    from great_tf.data.classification import classification_info
    from great_tf.errors import GreatError

    if args.pixel_scale <= 0:
        raise GreatError(f"--pixel-scale must be positive, got {args.pixel_scale}")
    info = classification_info(args.dataset, args.data_dir)
    args.eps = info.eps * args.pixel_scale if args.eps is None else args.eps
    args.beta_max = info.beta_max if args.beta_max is None else args.beta_max
    args.num_classes = info.num_classes
    given = [(name, getattr(args, name)) for name in ("eps", "eps_iter", "fgsm_train_eps")]
    for name, value in given + [("eps_grid", e) for e in getattr(args, "eps_grid", None) or ()]:
        if value is not None and not 0 <= value <= args.pixel_scale:
            raise GreatError(f"--{name.replace('_', '-')} {value} is outside [0, {args.pixel_scale}], "
                             f"the pixel scale: set --pixel-scale to the scale your eps is on")
    return args


def unit(value, args):
    """An eps on the user's pixel scale, in the [0, 1] units of the images."""
    return None if value is None else value / args.pixel_scale


def attack_settings(args):
    """The flags' attack settings, every eps in the images' [0, 1] units."""
    from great_tf.evaluation import Settings

    return Settings(eps=unit(args.eps, args), eps_iter=unit(args.eps_iter, args), iterations=args.iterations,
                    restarts=args.restarts, spsa_samples=args.spsa_samples, spsa_limit=args.spsa_limit,
                    apgd_iterations=args.apgd_iterations, apgd_restarts=args.apgd_restarts,
                    apgd_targets=args.apgd_targets, fab_iterations=args.fab_iterations,
                    fab_targets=args.fab_targets, square_queries=args.square_queries,
                    eps_grid=tuple(unit(e, args) for e in args.eps_grid), seed=args.seed)


def load_data(args):
    from great_tf.data import load_classification

    print(f"loading {args.dataset}...", flush=True)
    train = load_classification(args.dataset, "train", args.data_dir, args.train_limit)
    test = load_classification(args.dataset, "test", args.data_dir, args.eval_limit)
    args.data_sizes = (len(train[1]), len(test[1]))  # for the table's notes
    return train, test


def load_surrogate(args):
    """The undefended model the transfer attack is crafted on, or None."""
    from great_tf.saving import load_model

    path = args.surrogate or os.path.join(args.logdir, "baseline", "model.keras")
    if not os.path.exists(path):
        return None
    return load_model(path)


def evaluate(model, train, test, args, surrogate=None):
    """great_tf.evaluation.evaluate_model with the flags' settings; the eps grid in flag units."""
    from great_tf.evaluation import evaluate_model

    report = evaluate_model(model, train, test, attack_settings(args), surrogate, group=args.attacks,
                            attack_limit=args.attack_limit, saliency_images=SALIENCY_IMAGES)
    report.curves = {a: [list(args.eps_grid), acc] for a, (_, acc) in report.curves.items()}
    return report


def finish_row(run_dir, method, report, seconds):
    """Saves a method's result (result.json, saliency.npy); returns it with the saliency maps."""
    import numpy as np

    result = {"method": method, **report.row, "train s": None if seconds is None else round(seconds, 1),
              "curves": report.curves, "findings": report.findings}
    if run_dir is not None:
        np.save(os.path.join(run_dir, "saliency.npy"), report.saliency)
        runs.save_result(run_dir, result)
    return {**result, "saliency": report.saliency}


# -- training -----------------------------------------------------------------------------------
def train_method(method, args, train, test):
    """Trains one method (resuming if asked), saves its main network, returns its evaluated row."""
    import keras

    from great_tf.data import eval_dataset, num_examples, take
    from great_tf.data.augment import augment_images
    from great_tf.defense import build_defense
    from great_tf.summaries import DefenseSummaries

    run_dir = os.path.join(args.logdir, method)
    runs.prepare_run_dir(run_dir, args, {
        "method": method, "alpha_max": args.alpha_max, "beta_max": args.beta_max,
        "fgsm_train_eps": args.fgsm_train_eps, "pixel_scale": args.pixel_scale})
    done = runs.load_result(run_dir) if args.resume else None
    if done is not None:
        import numpy as np

        print(f"[{method}] finished earlier, result kept: {run_dir}")
        return {**done, "saliency": np.load(os.path.join(run_dir, "saliency.npy"))}

    keras.utils.set_random_seed(args.seed)
    steps = runs.epoch_steps(num_examples(train), args)
    model = runs.build_in_scope(args, lambda: build_defense(
        method, train[0].shape[1:], args.num_classes, args.width, steps, args.epochs,
        alpha_max=args.alpha_max, beta_max=args.beta_max, fgsm_eps=unit(args.fgsm_train_eps, args)))
    # The paper's defense augmentation: pad 4 and random crop, no flips (supplement).
    augment = augment_images(pad=4, flip=False)
    print(f"[{method}] training {args.epochs} epochs of {steps} steps, batch {args.batch_size}, "
          f"width {args.width}; logs in {run_dir}", flush=True)
    seconds, _ = runs.fit_resumable(
        model, run_dir, args, train,
        eval_dataset(test, 256), args.epochs, steps, [DefenseSummaries(run_dir, probe=take(test, 32))],
        augment=augment)
    model.main.save(os.path.join(run_dir, "model.keras"))
    print(f"[{method}] attacking...", flush=True)
    report = evaluate(model.main, train, test, args, load_surrogate(args))
    return finish_row(run_dir, method, report, seconds)


# -- reports --------------------------------------------------------------------------------------
TRAINING_KEYS = ("preset", "epochs", "batch_size", "width", "seed", "steps_per_epoch")


def training_note(trained, n_train):
    """How the evaluated model was trained (`trained`: its run's config; None: unknown)."""
    if trained is None:
        return "Settings of its training: unknown (no config.json next to the model)"
    cap = (f" of at most {trained['steps_per_epoch']} steps" if trained.get("steps_per_epoch") else "")
    return (f"preset {trained.get('preset')}, {trained.get('epochs')} epochs{cap}, batch "
            f"{trained.get('batch_size')}, ResNet-18 width {trained.get('width')}, seed "
            f"{trained.get('seed')}; trained on {n_train} images")


def table_notes(args, trained=None):
    """The notes under a robustness table. `trained`: the settings the model was trained with
    (its run's config.json, under --evaluate), default the flags' (the model was just trained)."""
    from great_tf.evaluation import attack_settings_note, column_notes, paper_table1_note

    from great_tf.evaluation import TRAIN_EXAMPLES

    if trained is None and not getattr(args, "evaluate", None):
        trained = {k: getattr(args, k, None) for k in TRAINING_KEYS}
    n_train, n_test = getattr(args, "data_sizes", (None, None))
    attacked = min(args.attack_limit, n_test) if args.attack_limit and n_test else args.attack_limit
    limit = f"the first {attacked} test images" if attacked else "every test image evaluated"
    test_set = (f"the first {n_test} images of the test split" if args.eval_limit
                else f"the whole test split ({n_test} images)")
    notes = [
        f"Test accuracy in %. eps = {args.eps:g} on the [0, {args.pixel_scale:g}] pixel scale "
        f"(= {unit(args.eps, args):.4g} of the full range; images in [0, 1]), L-inf. "
        + attack_settings_note(args.attacks, attack_settings(args)),
        f"Settings: {args.dataset}, {training_note(trained, n_train)}; Train is on the first "
        f"{min(TRAIN_EXAMPLES, n_train or TRAIN_EXAMPLES)} training images; No attack on {test_set}.",
        f"Every attack column is on {limit}" + (f" (SPSA: the first {args.spsa_limit})" if args.spsa_limit
                                                else "") + ".",
        *column_notes(args.attacks, attack_settings(args)),
    ]
    if args.dataset == "cifar10" and args.attacks != "strong":
        notes.append(paper_table1_note())
    return notes


def write_reports(rows, args, stem_dir=None, trained=None):
    """The robustness table (.md/.csv/.json) with the masking findings under it, the
    accuracy-against-eps plot and the saliency grid; `trained` as in `table_notes`."""
    from great_tf.data import load_classification
    from great_tf.evaluation import write_report

    images = load_classification(args.dataset, "test", args.data_dir, SALIENCY_IMAGES)[0]
    return write_report(
        rows, args.attacks, stem_dir or args.logdir, f"Adversarial robustness on {args.dataset}",
        table_notes(args, trained), eps_label=f"eps ([0, {args.pixel_scale:g}] pixel scale)",
        curve_title=f"{args.dataset}: accuracy against eps (L-inf, [0, {args.pixel_scale:g}] pixel scale, "
                    f"k = {args.iterations}, APGD {args.apgd_iterations} iterations)",
        images=images,
        saliency_title=f"{args.dataset}: |dCE/dx| (max over channels, each map scaled to its maximum); "
                       f"attacks use eps = {args.eps:g} on the [0, {args.pixel_scale:g}] scale")


def evaluate_saved(args):
    """--evaluate PATH: the row of a saved model, written next to it, without retraining."""
    from great_tf.errors import GreatError
    from great_tf.saving import check_input_shape, load_model

    path = args.evaluate
    model_path = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    if not os.path.exists(model_path):
        raise GreatError(f"no saved model at {model_path}: pass a method's run folder or its model.keras")
    run_dir = os.path.dirname(os.path.abspath(model_path))
    config = saved_config(run_dir)
    method = os.path.basename(run_dir)
    if config is not None:
        method = config.get("method", method)
        # The model's own data set and pixel scale, unless given on the command line; its own
        # training images (the Train column is on the first of them).
        args.dataset = config.get("dataset", args.dataset)
        args.train_limit = config.get("train_limit")
        if args.pixel_scale == 1.0:
            args.pixel_scale = config.get("pixel_scale", 1.0)
    check_args(args)
    args.logdir = os.path.dirname(run_dir)
    model = load_model(model_path)
    train, test = load_data(args)
    check_input_shape(model, train[0].shape[1:], model_path, args.dataset)
    result = finish_row(None, method, evaluate(model, train, test, args, load_surrogate(args)), None)
    folder = evaluation_dir(run_dir, args)
    os.makedirs(folder, exist_ok=True)
    runs.write_json(os.path.join(folder, runs.RESULT_NAME),
                    {**{k: v for k, v in result.items() if k != "saliency"}, "eps": args.eps,
                     "pixel_scale": args.pixel_scale, "attacks": args.attacks})
    return [result], write_reports([result], args, stem_dir=folder, trained=config)


def saved_config(run_dir):
    """The config.json of the run that saved the model in `run_dir` (None: there is none); a
    one-line `GreatError` if it is unreadable or not a run's settings."""
    from great_tf.errors import GreatError

    path = os.path.join(run_dir, runs.CONFIG_NAME)
    fix = (f"it holds the settings the model was trained with (data set, pixel scale, the table's "
           f"notes): restore it, or delete it to evaluate on the flags' data set with the settings "
           f"unknown")
    config = runs.read_json(path, fix)
    if config is not None and not isinstance(config, dict):
        raise GreatError(f"{path} is not a run's settings (a JSON {type(config).__name__}, not an "
                         f"object): {fix}")
    return config


def evaluation_dir(run_dir, args):
    """Where a re-evaluation of the model in `run_dir` goes: one folder per eps, so that attacks
    at several eps sit side by side (evaluation/eps0.3, evaluation/eps8of255)."""
    eps = f"{args.eps:g}" if args.pixel_scale == 1.0 else f"{args.eps:g}of{args.pixel_scale:g}"
    return os.path.join(run_dir, "evaluation", f"eps{eps}")
