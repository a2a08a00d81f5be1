"""APGD and Square: our throughput and strength next to ART's, on the same model and budget.

    python -m bench.attacks                 # ResNet-18 width 16, APGD 100 iterations, Square 1000 queries
    python -m bench.attacks --smoke         # a few seconds: checks that the script runs

One ResNet-18 (width 16) is trained briefly on the first CIFAR-10 training images (random data
if CIFAR-10 is not in TFDS_DATA_DIR, or with --epochs 0: then only the speed means something).
Then on the first --images test images at eps = 8/255 (L-inf): great_tf.attacks.apgd (CE, one
restart) and great_tf.attacks.square, and, if adversarial-robustness-toolbox is installed
(`pip install -e .[crosscheck]`), ART's AutoProjectedGradientDescent and SquareAttack with the
same budgets. Reported per attack: images per second (wall clock and CPU time) and the robust
accuracy left (lower is stronger; ours should be at most ART's plus noise). Both Square
implementations stop on an example once it is misclassified, so their speed is measured at the
success rate they reach.
"""

import time

import numpy as np


def trained_model(width, epochs, train_images, seed, smoke):
    """A ResNet-18 trained `epochs` on the first CIFAR-10 images, and the test images."""
    import keras

    from great_tf.models import resnet18

    try:
        from great_tf.data import load_classification

        train = load_classification("cifar10", "train", limit=train_images)
        test = load_classification("cifar10", "test", limit=512)
        source = "CIFAR-10"
    except Exception as err:  # no data on disk: the speed is still measured
        rng = np.random.default_rng(seed)
        train = (rng.random((train_images, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, train_images))
        test = (rng.random((512, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 512))
        source = f"random data ({str(err).splitlines()[0][:80]})"
    keras.utils.set_random_seed(seed)
    model = resnet18((32, 32, 3), 10, width=width)
    if epochs:
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(train[0], np.asarray(train[1], np.int32), epochs=epochs, batch_size=8 if smoke else 64,
                  verbose=0)
    print(f"model: ResNet-18 width {width}, {epochs} epochs on {len(train[0])} {source} images", flush=True)
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
    print(f"{name:22s} {len(x) / wall:9.2f} images/s wall {len(x) / cpu:9.2f} images/s CPU   "
          f"robust accuracy {accuracy:5.1f} %", flush=True)
    return {"images/s": len(x) / wall, "cpu images/s": len(x) / cpu, "accuracy": accuracy}


def ours(model, x, y, eps, args):
    from great_tf import attacks

    batch = args.batch_size
    # Trace every compiled function once, outside the timing.
    attacks.apgd(model, x[:batch], eps, nb_iter=2, y=y[:batch])
    attacks.square(model, x[:batch], eps, nb_queries=2, y=y[:batch])
    return {
        f"ours APGD-CE x{args.apgd_iterations}": report(
            f"ours APGD-CE x{args.apgd_iterations}", model, x, y, lambda: attacks.batched(
                attacks.apgd, model, x, y, batch_size=batch, eps=eps, nb_iter=args.apgd_iterations)),
        f"ours Square x{args.square_queries}": report(
            f"ours Square x{args.square_queries}", model, x, y, lambda: attacks.batched(
                attacks.square, model, x, y, batch_size=batch, eps=eps, nb_queries=args.square_queries)),
    }


def art(model, x, y, eps, args):
    """ART's attacks with the same budgets, or None if ART is not installed."""
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
        from art.estimators.classification import TensorFlowV2Classifier
    except ImportError:
        print("ART: not installed (pip install -e .[crosscheck]); no side-by-side figures", flush=True)
        return None
    import keras

    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=(32, 32, 3), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    onehot = np.eye(10, dtype=np.float32)[y]
    apgd = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps,
                                        max_iter=args.apgd_iterations, targeted=False, nb_random_init=1,
                                        batch_size=args.batch_size, loss_type="cross_entropy", verbose=False)
    square = SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=args.square_queries, p_init=0.8,
                          nb_restarts=1, batch_size=args.batch_size, verbose=False)
    apgd.generate(x=x[:2], y=onehot[:2])  # warm up
    return {
        f"ART APGD-CE x{args.apgd_iterations}": report(f"ART APGD-CE x{args.apgd_iterations}", model, x, y,
                                                       lambda: apgd.generate(x=x, y=onehot)),
        f"ART Square x{args.square_queries}": report(f"ART Square x{args.square_queries}", model, x, y,
                                                     lambda: square.generate(x=x, y=onehot)),
    }


def main(argv=None):
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m bench.attacks", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=flags.positive_int, default=16)
    parser.add_argument("--images", type=flags.positive_int, default=256, help="attacked test images")
    parser.add_argument("--batch-size", type=flags.positive_int, default=128)
    parser.add_argument("--apgd-iterations", type=flags.positive_int, default=100)
    parser.add_argument("--square-queries", type=flags.positive_int, default=1000)
    parser.add_argument("--eps", type=float, default=8 / 255, help="L-inf eps on the [0, 1] scale")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (0: random weights)")
    parser.add_argument("--train-images", type=flags.positive_int, default=10000)
    parser.add_argument("--no-art", action="store_true", help="time ours only")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: width 4, 8 images, APGD 3 iterations, Square 10 queries")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.width, args.images, args.batch_size, args.apgd_iterations = 4, 8, 8, 3
        args.square_queries, args.epochs, args.train_images = 10, 1, 64
    from great_tf import attacks

    model, test = trained_model(args.width, args.epochs, args.train_images, args.seed, args.smoke)
    x, y = test[0][:args.images], np.asarray(test[1][:args.images], np.int64)
    print(f"{len(x)} test images, clean accuracy {attacks.accuracy(model, x, y):.1f} %, eps {args.eps:.4g} "
          f"(L-inf, [0, 1] scale), batch {args.batch_size}", flush=True)
    results = ours(model, x, y, args.eps, args)
    theirs = None if args.no_art else art(model, x, y, args.eps, args)
    if theirs:
        for (mine, a), (their, b) in zip(results.items(), theirs.items()):
            print(f"{mine} / {their}: {a['images/s'] / b['images/s']:.2f}x faster (wall), "
                  f"{a['cpu images/s'] / b['cpu images/s']:.2f}x (CPU); robust accuracy "
                  f"{a['accuracy']:.1f} % vs {b['accuracy']:.1f} %", flush=True)
    return results, theirs


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main)
