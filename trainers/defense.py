"""Adversarial defense with GREAT and GREACE next to its baselines (paper Algorithm 1, Tables 1-2,
Figure 4), with attacks that do not trust the defended model's gradient.

    python -m trainers.defense --dataset cifar10                     # all five methods, small preset
    python -m trainers.defense --dataset cifar10 --method great+ce --preset paper
    python -m trainers.defense --evaluate runs/defense/cifar10/great+ce   # re-evaluate a saved model

Every eps is on the [0, 1] pixel scale unless --pixel-scale says otherwise (e.g. --pixel-scale 255
--eps 8 means 8/255); every table and figure states it.
"""

import json
import os

from trainers import flags

PRESETS = {
    # About ten minutes on 2 CPU cores for all five methods and their attacks on the real CIFAR-10
    # subset (5000 training images); attacks run on the first 200 test images, SPSA on 50.
    "small": {"epochs": 3, "batch_size": 64, "width": 8, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": 200, "spsa_limit": 50},
    # The paper's supplement: ResNet-18 (width 64), Adam 1e-3 poly for both networks, 100 epochs.
    # The paper does not give the batch size; 128 is our choice. Attacks on the whole test set.
    "paper": {"epochs": 100, "batch_size": 128, "width": 64, "train_limit": None, "steps_per_epoch": None,
              "attack_limit": None, "spsa_limit": 1000},
}
DATASETS = ("cifar10", "svhn_cropped", "mnist")
EPS = {"cifar10": 0.1, "svhn_cropped": 0.2, "mnist": 0.2}  # Tables 1 and 2; mnist: our choice
EPS_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
PAPER_COLUMNS = ["Train", "No attack", "FGSM", "iFGSM", "FGSM Worst", "FGSM Random", "iFGSM Worst",
                 "iFGSM Random"]
CHECK_COLUMNS = ["PGD", "Transfer iFGSM", "SPSA"]
COLUMNS = ["method", *PAPER_COLUMNS, *CHECK_COLUMNS, "train s"]
PAPER_TABLE1 = {  # CIFAR-10, eps = 0.1, the paper's Table 1 in PAPER_COLUMNS order.
    "baseline": (99.97, 93.32, 32.75, 1.99, 72.89, 10.43, 89.59, 18.29),
    "adversarial": (99.97, 89.91, 56.88, 16.73, 82.07, 45.26, 89.81, 69.89),
    "greace": (92.56, 89.84, 77.90, 72.40, 83.39, 66.23, 87.13, 79.10),
    "great": (99.53, 91.95, 47.51, 15.45, 72.73, 12.78, 89.62, 21.95),
    "great+ce": (90.87, 89.97, 81.28, 77.04, 84.53, 73.52, 88.57, 82.38),
}
SALIENCY_IMAGES = 3


def parse_args(argv=None):
    from great_tf.defense import ALPHA_MAX, FGSM_TRAIN_EPS, MODES

    parser = flags.base_parser(
        "python -m trainers.defense", "Adversarial defense with GREAT/GREACE (Algorithm 1) and baselines.",
        datasets=DATASETS, methods=MODES, default_dataset="cifar10")
    parser.add_argument("--evaluate", metavar="PATH",
                        help="evaluate a saved model (a method's run folder or its model.keras), no training")
    parser.add_argument("--eps", type=float, help="attack eps (default: 0.1 cifar10, 0.2 svhn_cropped/mnist)")
    parser.add_argument("--pixel-scale", type=float, default=1.0,
                        help="eps values are on the [0, PIXEL_SCALE] scale (default 1: images in [0, 1])")
    parser.add_argument("--iterations", type=flags.positive_int, default=10, help="iFGSM/PGD/SPSA steps k")
    parser.add_argument("--eps-iter", type=float, help="iterative step size (default 2.5 * eps / k)")
    parser.add_argument("--restarts", type=flags.positive_int, default=2, help="PGD random restarts")
    parser.add_argument("--attack-limit", type=flags.positive_int,
                        help="attack only the first N test images (preset: 500 small, all paper)")
    parser.add_argument("--spsa-limit", type=flags.positive_int, help="test images for SPSA (preset)")
    parser.add_argument("--spsa-samples", type=flags.positive_int, default=32,
                        help="SPSA random directions per step (each costs 2 forward passes)")
    parser.add_argument("--eps-grid", type=float, nargs="+", default=list(EPS_GRID),
                        help="eps values of the accuracy-against-eps plot (pixel scale as --eps)")
    parser.add_argument("--alpha-max", type=float, default=ALPHA_MAX)
    parser.add_argument("--beta-max", type=float, help="default: 2 cifar10, 10 svhn_cropped and mnist")
    parser.add_argument("--fgsm-train-eps", type=float, default=FGSM_TRAIN_EPS,
                        help="FGSM eps of adversarial training (pixel scale as --eps; paper 0.2)")
    parser.add_argument("--surrogate", help="undefended model.keras for the transfer attack "
                        "(default: the baseline run in --logdir, if there is one)")
    args = flags.apply_preset(parser.parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "defense", args.dataset)
    return args


def check_args(args):
    from great_tf.defense import BETA_MAX
    from great_tf.errors import GreatError

    if args.pixel_scale <= 0:
        raise GreatError(f"--pixel-scale must be positive, got {args.pixel_scale}")
    args.eps = EPS[args.dataset] if args.eps is None else args.eps
    args.beta_max = BETA_MAX[args.dataset] if args.beta_max is None else args.beta_max
    for name in ("eps", "eps_iter", "fgsm_train_eps"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= args.pixel_scale:
            raise GreatError(f"--{name.replace('_', '-')} {value} is outside [0, {args.pixel_scale}], "
                             f"the pixel scale: set --pixel-scale to the scale your eps is on")
    return args


def unit(value, args):
    """An eps on the user's pixel scale, in the [0, 1] units of the images."""
    return None if value is None else value / args.pixel_scale


def scale_note(args):
    return (f"eps = {args.eps:g} on the [0, {args.pixel_scale:g}] pixel scale (= {unit(args.eps, args):.4g} "
            f"of the full range; images in [0, 1]), L-inf; iFGSM, PGD and SPSA use k = {args.iterations}.")


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


# -- evaluation ---------------------------------------------------------------------------------
def evaluate_model(model, train, test, args, surrogate=None):
    """The Table 1 row of a classifier, the obfuscation checks, and the accuracy-against-eps curves."""
    import numpy as np

    from great_tf import attacks
    from great_tf.data import take

    x, y = take(test, args.attack_limit)
    num_classes = int(max(test[1].max(), train[1].max())) + 1
    eps, eps_iter, k = unit(args.eps, args), unit(args.eps_iter, args), args.iterations
    worst = attacks.predict_labels(lambda b: -model(b), x)  # argmax of -logits: least likely
    random = attacks.random_wrong_labels(y, num_classes, args.seed).numpy()

    def acc(x_adv):
        return attacks.accuracy(model, x_adv, y)

    def ifgsm(target_model, labels, targeted, e=eps):
        return attacks.batched(attacks.iterative_fgsm, target_model, x, labels, eps=e, eps_iter=eps_iter,
                               nb_iter=k, targeted=targeted)

    row = {
        "Train": attacks.accuracy(model, *take(train, 5000)),
        "No attack": attacks.accuracy(model, *test),
        "FGSM": acc(attacks.batched(attacks.fgsm, model, x, y, eps=eps)),
        "iFGSM": acc(ifgsm(model, y, False)),
        "FGSM Worst": acc(attacks.batched(attacks.fgsm, model, x, worst, eps=eps, targeted=True)),
        "FGSM Random": acc(attacks.batched(attacks.fgsm, model, x, random, eps=eps, targeted=True)),
        "iFGSM Worst": acc(ifgsm(model, worst, True)),
        "iFGSM Random": acc(ifgsm(model, random, True)),
        "PGD": acc(attacks.batched(attacks.pgd, model, x, y, eps=eps, eps_iter=eps_iter, nb_iter=k,
                                   restarts=args.restarts, seed=args.seed)),
        "Transfer iFGSM": acc(ifgsm(surrogate, y, False)) if surrogate is not None else None,
    }
    xs, ys = x[: args.spsa_limit], y[: args.spsa_limit]
    spsa = attacks.batched(attacks.spsa, model, xs, ys, batch_size=50, eps=eps, eps_iter=eps_iter,
                           nb_iter=k, num_samples=args.spsa_samples, seed=args.seed)
    row["SPSA"] = attacks.accuracy(model, spsa, ys)
    curves = {"FGSM": [], "iFGSM": []}
    for e in args.eps_grid:
        e_unit = unit(e, args)
        curves["FGSM"].append(acc(attacks.batched(attacks.fgsm, model, x, y, eps=e_unit)))
        curves["iFGSM"].append(acc(ifgsm(model, y, False, e_unit)))
    saliency = saliency_maps(model, test)
    return row, {a: [list(args.eps_grid), v] for a, v in curves.items()}, np.asarray(saliency)


def saliency_maps(model, test):
    from great_tf.data import take
    from great_tf.gradients import saliency_maps as maps

    x, y = take(test, SALIENCY_IMAGES)
    return maps(model, x, y).numpy()


def finish_row(run_dir, method, row, curves, saliency, seconds):
    """Saves a method's result (result.json, saliency.npy); returns it with the saliency maps."""
    import numpy as np

    result = {"method": method, **{k: (None if v is None else float(v)) for k, v in row.items()},
              "train s": round(seconds, 1), "curves": curves}
    np.save(os.path.join(run_dir, "saliency.npy"), saliency)
    flags.save_result(run_dir, result)
    return {**result, "saliency": saliency}


# -- training -----------------------------------------------------------------------------------
def train_method(method, args, train, test):
    """Trains one method (resuming if asked), saves its main network, returns its evaluated row."""
    import keras

    from great_tf.data import eval_dataset, num_examples, take, train_dataset
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
    num_classes = int(train[1].max()) + 1
    model = flags.build_in_scope(args, lambda: build_defense(
        method, train[0].shape[1:], num_classes, args.width, steps, args.epochs,
        alpha_max=args.alpha_max, beta_max=args.beta_max, fgsm_eps=unit(args.fgsm_train_eps, args)))
    # The paper's defense augmentation: pad 4 and random crop, no flips (supplement).
    augment = augment_images(pad=4, flip=False)
    print(f"[{method}] training {args.epochs} epochs of {steps} steps, batch {args.batch_size}, "
          f"width {args.width}; logs in {run_dir}", flush=True)
    seconds, _ = flags.fit_resumable(
        model, run_dir, args,
        lambda initial_epoch: train_dataset(train, args.batch_size, args.seed, args.epochs,
                                            initial_epoch, augment),
        eval_dataset(test, 256), args.epochs, steps, [DefenseSummaries(run_dir, probe=take(test, 32))])
    model.main.save(os.path.join(run_dir, "model.keras"))
    print(f"[{method}] attacking...", flush=True)
    row, curves, saliency = evaluate_model(model.main, train, test, args, load_surrogate(args))
    return finish_row(run_dir, method, row, curves, saliency, seconds)


# -- reports --------------------------------------------------------------------------------------
def table_notes(args):
    notes = [
        f"Test accuracy in %. {scale_note(args)}",
        f"Settings: {args.dataset}, preset {args.preset}, {args.epochs} epochs, batch {args.batch_size}, "
        f"ResNet-18 width {args.width}, seed {args.seed}; Train is on the first 5000 training images.",
        "No attack is on the whole test set; every attack column on "
        + (f"the first {args.attack_limit} test images" if args.attack_limit else "the whole test set")
        + (f" (SPSA: the first {args.spsa_limit})" if args.spsa_limit else "") + ".",
        "Worst / Random: targeted at the least probable / a random wrong class. "
        f"PGD: {args.restarts} random restarts, step 2.5 eps / k unless --eps-iter.",
        "Obfuscation checks (not in the paper): Transfer iFGSM crafts non-targeted iFGSM on the "
        "undefended baseline model and applies it to each model (for baseline itself it is white-box); "
        f"SPSA is gradient-free ({args.spsa_samples} random directions per step). If a defense is far "
        "more accurate under its own gradient's attacks than under these, its robustness is "
        "gradient obfuscation.",
    ]
    if args.dataset == "cifar10":
        notes.append("The paper's Table 1 (ResNet-18 width 64, 100 epochs, 50,000 images, eps 0.1): "
                     + "; ".join(f"{m} " + " / ".join(f"{v:g}" for v in vals)
                                 for m, vals in PAPER_TABLE1.items()) + ".")
    return notes


def write_reports(rows, args, stem_dir=None):
    """The robustness table (.md/.csv/.json), the accuracy-against-eps plot and the saliency grid."""
    from great_tf.reporting import plot_accuracy_vs_eps, plot_saliency_grid, write_table

    stem_dir = stem_dir or args.logdir
    stem = os.path.join(stem_dir, "robustness")
    formats = {c: ".2f" for c in PAPER_COLUMNS + CHECK_COLUMNS}
    table_rows = [{k: v for k, v in r.items() if k != "saliency"} for r in rows]
    text = write_table(table_rows, COLUMNS, stem, title=f"Adversarial robustness on {args.dataset}",
                       notes=table_notes(args), formats={**formats, "train s": ".1f"})
    curves = {}
    for row in rows:
        for attack, (eps, acc) in (row.get("curves") or {}).items():
            curves.setdefault(f"{attack} (non-targeted)", {})[row["method"]] = (eps, acc)
    eps_plot = os.path.join(stem_dir, "accuracy_vs_eps.png")
    plot_accuracy_vs_eps(curves, eps_plot, f"{args.dataset}: accuracy against eps "
                         f"(L-inf, [0, {args.pixel_scale:g}] pixel scale, k = {args.iterations})",
                         xlabel=f"eps ([0, {args.pixel_scale:g}] pixel scale)")
    maps = {row["method"]: row["saliency"] for row in rows if row.get("saliency") is not None}
    saliency_plot = os.path.join(stem_dir, "saliency.png")
    from great_tf.data import load_classification

    images = load_classification(args.dataset, "test", args.data_dir, SALIENCY_IMAGES)[0]
    plot_saliency_grid(images, maps, saliency_plot,
                       f"{args.dataset}: |dCE/dx| (max over channels, each map scaled to its maximum); "
                       f"attacks use eps = {args.eps:g} on the [0, {args.pixel_scale:g}] scale")
    print("\n" + text + f"\n\n(written to {stem}.md, .csv and .json; {eps_plot}; {saliency_plot})")
    return text


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
    row, curves, saliency = evaluate_model(model, train, test, args, load_surrogate(args))
    result = {"method": method, **row, "train s": None, "curves": curves, "saliency": saliency}
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
