"""APGD, Square and FAB-T: our throughput and strength next to ART's, on a trained model.

    python -m bench.attacks                 # ResNet-18 width 16, 10 epochs on the whole train split
    python -m bench.attacks --smoke         # a few seconds: checks that the script runs

One ResNet-18 (width 16) is trained --epochs on the first --train-images CIFAR-10 training
images of TFDS_DATA_DIR (or --data-dir; default: the whole split; a size the split does not have
is refused). Then on the first --images test images at eps = 1/255 (L-inf; at 8/255 an
undefended model is at 0 % under every attack, so robust accuracy would not compare strengths):
great_tf.attacks.apgd (CE, one restart), great_tf.attacks.square and great_tf.attacks.fab
(FAB-T), and, if adversarial-robustness-toolbox is installed (`pip install -e .[crosscheck]`),
ART's AutoProjectedGradientDescent and SquareAttack with the same budgets (ART has no FAB), our
Square with its p schedule scaled to the budget as ART's is. Reported per attack: images per
second (wall clock and CPU time) and the robust accuracy left (lower is stronger; ours should be
at most ART's plus noise). Both Square implementations, and FAB-T over its targets, stop on an
example once it is misclassified, so their speed is measured at the success rate they reach.
"""

import time

import numpy as np

from great_tf.attacks.autoattack import STANDARD_BUDGET

DATASET = "cifar10"


def split_size(split, data_dir=None):
    """How many examples the prepared split holds (from its metadata, without reading it)."""
    from great_tf.data.classification import open_builder

    splits = open_builder(DATASET, data_dir).info.splits
    if split not in splits:
        from great_tf.errors import GreatError

        raise GreatError(f"{DATASET} in {data_dir or 'TFDS_DATA_DIR'} has no {split!r} split: "
                         f"prepare it first")
    return splits[split].num_examples


def settled_size(flag, requested, available, split):
    """A number of images of `split` asked for by `flag`: all `available` when not given; more
    than the split holds is refused (never filled up with random data)."""
    if requested is None:
        return available
    if requested > available:
        from great_tf.errors import GreatError

        raise GreatError(f"{flag} {requested} is more than the {available} images of the {DATASET} {split} "
                         f"split here: give at most {available}")
    return requested


def trained_model(args):
    """A ResNet-18 trained `args.epochs` on the first CIFAR-10 training images, and the test images."""
    import keras

    from great_tf.data import load_classification
    from great_tf.models import resnet18

    train = load_classification(DATASET, "train", args.data_dir, args.train_images)
    test = load_classification(DATASET, "test", args.data_dir, args.images)
    keras.utils.set_random_seed(args.seed)
    model = resnet18(train[0].shape[1:], 10, width=args.width)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train[0], train[1], epochs=args.epochs, batch_size=min(64, len(train[0])), verbose=0)
    print(f"model: ResNet-18 width {args.width}, {args.epochs} epochs on {len(train[0])} CIFAR-10 images",
          flush=True)
    return model, test


def timed(run):
    """(result, wall seconds, CPU seconds) of `run()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def report(name, model, x, y, run):
    from great_tf import attacks

    x_adv, wall, cpu = timed(run)
    accuracy = attacks.accuracy(model, np.asarray(x_adv, np.float32), y)
    print(f"{name:30s} {len(x) / wall:9.2f} images/s wall {len(x) / cpu:9.2f} images/s CPU   "
          f"robust accuracy {accuracy:5.1f} %", flush=True)
    return {"images/s": len(x) / wall, "cpu images/s": len(x) / cpu, "accuracy": accuracy}


def ours(model, x, y, eps, args):
    from great_tf import attacks

    def over_all(attack, **kwargs):
        return lambda: attacks.batched(attack, model, x, y, batch_size=args.batch_size, eps=eps, **kwargs)

    # Trace every compiled function outside the timing: twice, at two batch sizes and budgets, so
    # that tf.function (reduce_retracing) keeps one trace for any batch and budget. Against the
    # model's own predictions, so that no warm-up example is skipped as already misclassified.
    for n in (2, 3):
        predicted = attacks.predict_labels(model, x[:n])
        attacks.apgd(model, x[:n], eps, nb_iter=n, y=predicted)
        attacks.square(model, x[:n], eps, nb_queries=n, y=predicted, rescale_schedule=True)
        attacks.fab(model, x[:n], eps, nb_iter=n, nb_targets=1, y=predicted)
    return {
        "APGD-CE": report(f"ours APGD-CE x{args.apgd_iterations}", model, x, y,
                          over_all(attacks.apgd, nb_iter=args.apgd_iterations)),
        # ART, like the authors' stand-alone code, scales Square's p schedule to the budget
        # (AutoAttack, at 5,000 queries, does not): the same schedule on both sides.
        "Square": report(f"ours Square x{args.square_queries}", model, x, y,
                         over_all(attacks.square, nb_queries=args.square_queries, rescale_schedule=True)),
        "FAB-T": report(f"ours FAB-T x{args.fab_iterations}, {args.fab_targets} targets", model, x, y,
                        over_all(attacks.fab, nb_iter=args.fab_iterations, nb_targets=args.fab_targets)),
    }


def art(model, x, y, eps, args):
    """ART's APGD-CE and Square with the same budgets, or None if ART is not installed."""
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
        from art.estimators.classification import TensorFlowV2Classifier
    except ImportError:
        print("ART: not installed (pip install -e .[crosscheck]); no side-by-side figures", flush=True)
        return None
    import keras

    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=x.shape[1:], clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    onehot = np.eye(10, dtype=np.float32)[y]
    apgd = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps,
                                        max_iter=args.apgd_iterations, targeted=False, nb_random_init=1,
                                        batch_size=args.batch_size, loss_type="cross_entropy", verbose=False)
    square = SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=args.square_queries, p_init=0.8,
                          nb_restarts=1, batch_size=args.batch_size, verbose=False)
    apgd.generate(x=x[:2], y=onehot[:2])  # warm up
    return {
        "APGD-CE": report(f"ART APGD-CE x{args.apgd_iterations}", model, x, y,
                          lambda: apgd.generate(x=x, y=onehot)),
        "Square": report(f"ART Square x{args.square_queries}", model, x, y,
                         lambda: square.generate(x=x, y=onehot)),
    }


def fab_budget_note(args):
    """FAB-T's budget here against AutoAttack's standard one."""
    standard = (STANDARD_BUDGET["fab_iterations"], STANDARD_BUDGET["fab_targets"])
    here = (args.fab_iterations, min(args.fab_targets, 9))
    return (f"FAB-T: {here[0]} iterations x {here[1]} targets, 1 restart "
            + ("= AutoAttack's standard budget" if here == standard else
               f"(AutoAttack's standard budget: {standard[0]} iterations x {standard[1]} targets, "
               f"{standard[0] * standard[1] / (here[0] * here[1]):.3g}x this one on an example that "
               f"no target breaks)"))


def parse_args(argv=None):
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m bench.attacks", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=flags.positive_int, default=16)
    parser.add_argument("--images", type=flags.positive_int, default=256, help="attacked test images")
    parser.add_argument("--batch-size", type=flags.positive_int, default=128)
    parser.add_argument("--apgd-iterations", type=flags.positive_int, default=100)
    parser.add_argument("--square-queries", type=flags.positive_int, default=1000)
    parser.add_argument("--fab-iterations", type=flags.positive_int,
                        default=STANDARD_BUDGET["fab_iterations"])
    parser.add_argument("--fab-targets", type=flags.positive_int, default=STANDARD_BUDGET["fab_targets"],
                        help="FAB-T targets (at most 9 on CIFAR-10's 10 classes)")
    parser.add_argument("--eps", type=float, default=1 / 255,
                        help="L-inf eps on the [0, 1] scale (default 1/255: at 8/255 every attack leaves "
                        "an undefended model at 0 %%, which tells no attack's strength from another's)")
    parser.add_argument("--epochs", type=flags.positive_int, default=10, help="training epochs")
    parser.add_argument("--train-images", type=flags.positive_int,
                        help="train on the first N training images (default: the whole split)")
    parser.add_argument("--data-dir", type=flags.existing_dir,
                        help="TFDS data folder (default: $TFDS_DATA_DIR)")
    parser.add_argument("--no-art", action="store_true", help="time ours only")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: width 16, 64 training images, 8 attacked, APGD 3 iterations, Square 10 "
                        "queries, FAB-T 3 iterations x 2 targets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fab_targets > 9:
        parser.error(f"argument --fab-targets: CIFAR-10 has 9 classes besides the true one, "
                     f"got {args.fab_targets}")
    if args.smoke:
        # Width 16: narrower ResNets crash in oneDNN under ART's eager gradients on odd batches.
        args.width, args.images, args.batch_size, args.apgd_iterations = 16, 8, 8, 3
        args.square_queries, args.fab_iterations, args.fab_targets = 10, 3, 2
        args.epochs, args.train_images = 1, 64
    return args


def main(argv=None):
    args = parse_args(argv)
    from great_tf import attacks

    args.train_images = settled_size("--train-images", args.train_images, split_size("train", args.data_dir),
                                     "training")
    args.images = settled_size("--images", args.images, split_size("test", args.data_dir), "test")
    model, test = trained_model(args)
    x, y = test[0], np.asarray(test[1], np.int64)
    print(f"{len(x)} test images, clean accuracy {attacks.accuracy(model, x, y):.1f} %, eps {args.eps:.4g} "
          f"(L-inf, [0, 1] scale), batch {args.batch_size}", flush=True)
    results = ours(model, x, y, args.eps, args)
    print(fab_budget_note(args), flush=True)
    theirs = None if args.no_art else art(model, x, y, args.eps, args)
    for name, b in (theirs or {}).items():
        a = results[name]
        print(f"{name}, ours / ART: {a['images/s'] / b['images/s']:.2f}x faster (wall), "
              f"{a['cpu images/s'] / b['cpu images/s']:.2f}x (CPU); robust accuracy "
              f"{a['accuracy']:.1f} % vs {b['accuracy']:.1f} %", flush=True)
    return results, theirs


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main)
