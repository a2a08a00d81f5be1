"""Adversarial defense with GREAT and GREACE next to its baselines (paper Algorithm 1, Tables 1-2,
Figure 4), evaluated with the paper's attacks, stronger ones (APGD, Square, an AutoAttack-style
ensemble) and gradient-masking diagnostics.

    python -m trainers.defense --dataset cifar10                     # all five methods, small preset
    python -m trainers.defense --dataset cifar10 --method great+ce --preset paper
    python -m trainers.defense --evaluate runs/defense/cifar10/great+ce   # re-evaluate a saved model
    python -m trainers.defense --evaluate runs/defense/cifar10/great+ce --attacks strong

Every eps is on the [0, 1] pixel scale unless --pixel-scale says otherwise (e.g. --pixel-scale 255
--eps 8 means 8/255); every table and figure states it. The protocol lives in great_tf.evaluation
(docs/design.md#robustness); this file parses flags and trains.
"""

import json
import os

from trainers import flags

# AutoAttack's budgets at --preset paper; at the small preset a smaller one, so that the strong
# attacks add about as much time as the paper's columns: APGD 20 iterations (checkpoints at
# 4, 7, 10, ...), 3 APGD-T targets, Square 500 queries (its p schedule reaches p_init / 8).
PRESETS = {
    # About ten minutes on 2 CPU cores for all five methods on the real CIFAR-10 subset (5000
    # training images) with the paper's columns; --attacks all adds the strong attacks and the
    # masking diagnostics. Attacks run on the first 200 test images, SPSA on 50.
    "small": {"epochs": 3, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": 200, "spsa_limit": 50, "apgd_iterations": 20, "apgd_restarts": 1,
              "apgd_targets": 3, "square_queries": 500},
    # The paper's supplement: ResNet-18 (width 64), Adam 1e-3 poly for both networks, 100 epochs.
    # The paper does not give the batch size; 128 is our choice. Attacks on the whole test set.
    "paper": {"epochs": 100, "batch_size": 128, "width": 64, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": None, "spsa_limit": 1000, "apgd_iterations": 100, "apgd_restarts": 1,
              "apgd_targets": 9, "square_queries": 5000},
}
EPS_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
SALIENCY_IMAGES = 3


def parse_args(argv=None):
    from great_tf.defense import ALPHA_MAX, FGSM_TRAIN_EPS, MODES

    parser = flags.base_parser(
        "python -m trainers.defense", "Adversarial defense with GREAT/GREACE (Algorithm 1) and baselines.",
        datasets=None, methods=MODES, default_dataset="cifar10")
    parser.add_argument("--evaluate", metavar="PATH",
                        help="evaluate a saved model (a method's run folder or its model.keras), no training")
    parser.add_argument("--attacks", default="all", choices=("paper", "strong", "all"),
                        help="table columns: paper (Table 1), strong (APGD-CE, APGD-T, Square, AA), "
                        "all (both, plus PGD, transfer and SPSA; default)")
    parser.add_argument("--eps", type=float, help="attack eps (default: the paper's 0.1 cifar10, 0.2 svhn_cropped; 0.2 mnist and other "
                        "grayscale sets, 0.1 other colour sets)")
    parser.add_argument("--pixel-scale", type=float, default=1.0,
                        help="eps values are on the [0, PIXEL_SCALE] scale (default 1: images in [0, 1])")
    parser.add_argument("--iterations", type=flags.positive_int, default=10, help="iFGSM/PGD/SPSA steps k")
    parser.add_argument("--eps-iter", type=float, help="iterative step size (default 2.5 * eps / k)")
    parser.add_argument("--restarts", type=flags.positive_int, default=2, help="PGD random restarts")
    parser.add_argument("--attack-limit", type=flags.positive_int,
                        help="attack only the first N test images (preset: 200 small, all paper)")
    parser.add_argument("--spsa-limit", type=flags.positive_int, help="test images for SPSA (preset)")
    parser.add_argument("--spsa-samples", type=flags.positive_int, default=32,
                        help="SPSA random directions per step (each costs 2 forward passes)")
    parser.add_argument("--apgd-iterations", type=flags.positive_int,
                        help="APGD-CE/APGD-T iterations (preset: 20 small, 100 paper as AutoAttack)")
    parser.add_argument("--apgd-restarts", type=flags.positive_int,
                        help="APGD random restarts per target (preset: 1, as AutoAttack)")
    parser.add_argument("--apgd-targets", type=flags.positive_int,
                        help="APGD-T target classes, capped at classes - 1 (preset: 3 small, 9 paper)")
    parser.add_argument("--square-queries", type=flags.positive_int,
                        help="Square attack queries (preset: 500 small, 5000 paper as AutoAttack)")
    parser.add_argument("--eps-grid", type=float, nargs="+", default=list(EPS_GRID),
                        help="eps values of the accuracy-against-eps plot (pixel scale as --eps)")
    parser.add_argument("--alpha-max", type=float, default=ALPHA_MAX)
    parser.add_argument("--beta-max", type=float, help="default: 2 cifar10 and other colour sets, 10 svhn_cropped, mnist and other grayscale sets")
    parser.add_argument("--fgsm-train-eps", type=float, default=FGSM_TRAIN_EPS,
                        help="FGSM eps of adversarial training (pixel scale as --eps; paper 0.2)")
    parser.add_argument("--surrogate", help="undefended model.keras for the transfer attack "
                        "(default: the baseline run in --logdir, if there is one)")
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "defense", args.dataset)
    return args


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
    for name in ("eps", "eps_iter", "fgsm_train_eps"):
        value = getattr(args, name)
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
                    apgd_targets=args.apgd_targets, square_queries=args.square_queries,
                    eps_grid=tuple(unit(e, args) for e in args.eps_grid), seed=args.seed)


def load_data(args):
    from great_tf.data import load_classification

    print(f"loading {args.dataset}...", flush=True)
    train = load_classification(args.dataset, "train", args.data_dir, args.train_limit)
    test = load_classification(args.dataset, "test", args.data_dir)
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
        flags.save_result(run_dir, result)
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
    flags.prepare_run_dir(run_dir, args, {
        "method": method, "alpha_max": args.alpha_max, "beta_max": args.beta_max,
        "fgsm_train_eps": args.fgsm_train_eps, "pixel_scale": args.pixel_scale})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None:
        import numpy as np

        print(f"[{method}] finished earlier, result kept: {run_dir}")
        return {**done, "saliency": np.load(os.path.join(run_dir, "saliency.npy"))}

    keras.utils.set_random_seed(args.seed)
    steps = flags.epoch_steps(num_examples(train), args)
    model = flags.build_in_scope(args, lambda: build_defense(
        method, train[0].shape[1:], args.num_classes, args.width, steps, args.epochs,
        alpha_max=args.alpha_max, beta_max=args.beta_max, fgsm_eps=unit(args.fgsm_train_eps, args)))
    # The paper's defense augmentation: pad 4 and random crop, no flips (supplement).
    augment = augment_images(pad=4, flip=False)
    print(f"[{method}] training {args.epochs} epochs of {steps} steps, batch {args.batch_size}, "
          f"width {args.width}; logs in {run_dir}", flush=True)
    seconds, _ = flags.fit_resumable(
        model, run_dir, args, train,
        eval_dataset(test, 256), args.epochs, steps, [DefenseSummaries(run_dir, probe=take(test, 32))],
        augment=augment)
    model.main.save(os.path.join(run_dir, "model.keras"))
    print(f"[{method}] attacking...", flush=True)
    report = evaluate(model.main, train, test, args, load_surrogate(args))
    return finish_row(run_dir, method, report, seconds)


# -- reports --------------------------------------------------------------------------------------
def table_notes(args):
    from great_tf.evaluation import attack_settings_note, column_notes, paper_table1_note

    limit = f"the first {args.attack_limit} test images" if args.attack_limit else "the whole test set"
    notes = [
        f"Test accuracy in %. eps = {args.eps:g} on the [0, {args.pixel_scale:g}] pixel scale "
        f"(= {unit(args.eps, args):.4g} of the full range; images in [0, 1]), L-inf. "
        + attack_settings_note(args.attacks, attack_settings(args)),
        f"Settings: {args.dataset}, preset {args.preset}, {args.epochs} epochs, batch {args.batch_size}, "
        f"ResNet-18 width {args.width}, seed {args.seed}.",
        f"Every attack column is on {limit}" + (f" (SPSA: the first {args.spsa_limit})" if args.spsa_limit
                                                else "") + ".",
        *column_notes(args.attacks, attack_settings(args)),
    ]
    if args.dataset == "cifar10" and args.attacks != "strong":
        notes.append(paper_table1_note())
    return notes


def write_reports(rows, args, stem_dir=None):
    """The robustness table (.md/.csv/.json) with the masking findings under it, the
    accuracy-against-eps plot and the saliency grid."""
    from great_tf.data import load_classification
    from great_tf.evaluation import write_report

    images = load_classification(args.dataset, "test", args.data_dir, SALIENCY_IMAGES)[0]
    return write_report(
        rows, args.attacks, stem_dir or args.logdir, f"Adversarial robustness on {args.dataset}",
        table_notes(args), eps_label=f"eps ([0, {args.pixel_scale:g}] pixel scale)",
        curve_title=f"{args.dataset}: accuracy against eps (L-inf, [0, {args.pixel_scale:g}] pixel scale, "
                    f"k = {args.iterations}, APGD {args.apgd_iterations} iterations)",
        images=images,
        saliency_title=f"{args.dataset}: |dCE/dx| (max over channels, each map scaled to its maximum); "
                       f"attacks use eps = {args.eps:g} on the [0, {args.pixel_scale:g}] scale")


def evaluate_saved(args):
    """--evaluate PATH: the row of a saved model, written next to it, without retraining."""
    from great_tf.errors import GreatError
    from great_tf.saving import load_model

    path = args.evaluate
    model_path = os.path.join(path, "model.keras") if os.path.isdir(path) else path
    if not os.path.exists(model_path):
        raise GreatError(f"no saved model at {model_path}: pass a method's run folder or its model.keras")
    run_dir = os.path.dirname(os.path.abspath(model_path))
    config_path = os.path.join(run_dir, "config.json")
    method = os.path.basename(run_dir)
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        method = config.get("method", method)
        # The model's own data set and pixel scale, unless given on the command line.
        args.dataset = config.get("dataset", args.dataset)
        if args.pixel_scale == 1.0:
            args.pixel_scale = config.get("pixel_scale", 1.0)
    check_args(args)
    args.logdir = os.path.dirname(run_dir)
    model = load_model(model_path)
    train, test = load_data(args)
    result = finish_row(None, method, evaluate(model, train, test, args, load_surrogate(args)), None)
    return [result], write_reports([result], args, stem_dir=os.path.join(run_dir, "evaluation"))


def main(argv=None):
    from great_tf.defense import MODES

    args = parse_args(argv)
    flags.setup_runtime(args)
    if args.evaluate:
        return evaluate_saved(args)[0]
    check_args(args)
    methods = MODES if args.method == "all" else (args.method,)
    train, test = load_data(args)
    rows = [train_method(m, args, train, test) for m in methods]
    write_reports(rows, args)
    return rows


if __name__ == "__main__":
    flags.run_cli(main)
