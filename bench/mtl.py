"""Step cost of every multi-task method, measured side by side in one run.

    python -m bench.mtl                       # every method, ResNet-18 width 16, batch 64
    python -m bench.mtl --width 64 --batch-size 128 --steps 5
    python -m bench.mtl --methods equal,great,pcgrad,pcgrad@feature
    python -m bench.mtl --smoke               # seconds: a tiny network, random data, one step

Every method trains the same network on the same real noisy-CIFAR-10 batches, on one device.
Methods are timed in interleaved rounds (round r times every method once) so that machine load
drifts hit them all alike; each method's figure is its median step time over rounds, and its cost
against equal weights. `name@feature` is a method with `space="feature"` (LibMTL's rep_grad: task
gradients at the shared feature); the default list has every registered method and the feature
variant of every method that offers one.

Counted on the traced steps (`great_tf.step_costs`), not estimated:
- encoder backward passes: how often one step back-propagates through the whole encoder
  (parameter-space gradient methods: one per task; loss weighting and feature-space: one);
- all-reduces per step with 2 replicas (MirroredStrategy over two logical CPU devices, traced,
  not run), by source: synchronized BatchNorm, the optimizers' gradient sums, the method's own.

Also measured (not with --smoke): the input pipeline alone, and building the data set (noise and
Canny edges) once.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FEATURE = "@feature"
SMOKE_SIZE = 8


def method_specs():
    """Every method name the benchmark takes: the registered ones, and `name@feature` for those
    with a `space` hyperparameter."""
    from great_tf.mtl import available_methods, method_class

    names = list(available_methods())
    return tuple(names + [n + FEATURE for n in names if "space" in method_class(n).hyperparameters])


def parse_args(argv=None):
    from trainers import flags

    specs = method_specs()
    parser = flags.OneLineParser(prog="python -m bench.mtl", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=flags.positive_int, default=16)
    parser.add_argument("--batch-size", type=flags.positive_int, default=64)
    parser.add_argument("--steps", type=flags.positive_int, default=10,
                        help="timed steps per method per round")
    parser.add_argument("--rounds", type=flags.positive_int, default=3)
    parser.add_argument("--methods", type=flags.choice_list(specs), default=list(specs),
                        help="comma-separated, from " + ",".join(specs) + " (default: all)")
    parser.add_argument("--data-dir", type=flags.existing_dir)
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the benchmark runs, in seconds: a one-convolution "
                        "encoder on random 8x8 data, batch 8, one step, one round (figures "
                        "meaningless)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.width, args.batch_size, args.steps, args.rounds = 2, 8, 1, 1
    return args


def build(spec, input_shape, width, smoke):
    """The compiled model of `spec` ("name" or "name@feature") on the paper's network (with
    --smoke a tiny one)."""
    from great_tf import mtl

    name, _, space = spec.partition("@")
    hyperparameters = {"space": space} if space else {}
    network = tiny_network if smoke else mtl.build_multitask_network
    model = mtl.build_mtl_model(name, input_shape, mtl.CIFAR10_NOISY_TASKS, width, network=network,
                                **hyperparameters)
    return mtl.compile_mtl(model, steps_per_epoch=1000, epochs=1)


def tiny_network(input_shape, tasks, width):
    """`great_tf.mtl.network.tiny_multitask_network` with 8 x width encoder channels."""
    from great_tf.mtl.network import tiny_multitask_network

    return tiny_multitask_network(input_shape, tasks, channels=8 * width)


def step_timer(spec, width, batches, smoke):
    """(a function that runs the compiled train step over `batches` and returns seconds per
    step, the step's encoder backward passes)."""
    import tensorflow as tf

    from great_tf.models.resnet import check_onednn_batch
    from great_tf.step_costs import encoder_backward_passes

    model = build(spec, batches[0][0].shape[1:], width, smoke)
    check_onednn_batch(model, int(batches[0][0].shape[0]))  # one line, not a crash
    step = tf.function(model.train_step)
    passes = encoder_backward_passes(model, step.get_concrete_function(batches[0]).graph)
    step(batches[0])  # warm up outside the timing

    def run():
        start = time.perf_counter()
        for batch in batches:
            logs = step(batch)
        float(logs["loss"])  # wait for the last step
        return (time.perf_counter() - start) / len(batches)

    return run, passes


def two_replica_costs(spec, width, batch, smoke, strategy):
    """The step's `CrossReplicaCosts` with 2 replicas (traced, not run)."""
    from great_tf.step_costs import cross_replica_costs

    with strategy.scope():
        model = build(spec, batch[0].shape[1:], width, smoke)
    return cross_replica_costs(model, batch, strategy)


def real_batches(args):
    import tensorflow as tf

    from great_tf.data import load_cifar10_noisy

    train = load_cifar10_noisy("train", args.data_dir, seed=0)
    x, y = train
    batches = []
    for i in range(args.steps):
        part = slice(i * args.batch_size, (i + 1) * args.batch_size)
        batches.append((tf.constant(x[part]), {k: tf.constant(v[part]) for k, v in y.items()}))
    return train, batches


def random_batches(args):
    """Random batches of the noisy-CIFAR-10 structure at 8x8 (for --smoke)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    s, n = SMOKE_SIZE, args.batch_size
    batches = []
    for _ in range(args.steps):
        y = {"class": tf.constant(rng.integers(0, 10, n)),
             "colour": tf.constant(rng.random((n, s, s, 3)), tf.float32),
             "edges": tf.constant(rng.random((n, s, s, 1)), tf.float32),
             "auto": tf.constant(rng.random((n, s, s, 1)), tf.float32)}
        batches.append((tf.constant(rng.random((n, s, s, 1)), tf.float32), y))
    return batches


def pipeline_images_per_second(train, batch_size):
    from great_tf.data import train_dataset

    ds = train_dataset(train, batch_size, seed=0, epochs=1)
    start = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in ds)
    return count / (time.perf_counter() - start)


def build_images_per_second(images, labels):
    from great_tf.data.noisy import make_noisy_multitask

    start = time.perf_counter()
    make_noisy_multitask(images, labels, seed=0)
    return len(images) / (time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    from great_tf.distribute import configure_cpu_replicas

    configure_cpu_replicas(2)  # before TensorFlow initialises: the 2-replica counts need them
    import tensorflow as tf

    from great_tf.mtl.experiment import quiet_retracing_warnings

    quiet_retracing_warnings()
    methods = args.methods
    train, batches = (None, random_batches(args)) if args.smoke else real_batches(args)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    timers, passes, costs = {}, {}, {}
    for m in methods:
        print(f"tracing {m}...", flush=True)
        timers[m], passes[m] = step_timer(m, args.width, batches, args.smoke)
        costs[m] = two_replica_costs(m, args.width, batches[0], args.smoke, strategy)
    seconds = {m: [] for m in methods}
    for _ in range(args.rounds):  # interleaved, so that load drifts hit every method alike
        for m in methods:
            seconds[m].append(timers[m]())
    median = {m: statistics.median(s) for m, s in seconds.items()}

    network = "a one-convolution encoder (--smoke)" if args.smoke else f"ResNet-18 width {args.width}"
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"\nMulti-task train step, {network}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.rounds} rounds, median, one device; {threads} threads")
    print("| method | s/step (median) | images/s | vs equal | encoder backward passes | "
          "all-reduces per step (2 replicas) |")
    print("|---|---|---|---|---|---|")
    for m in methods:
        ratio = f"{median[m] / median['equal']:.2f}x" if "equal" in median else "-"
        print(f"| {m} | {median[m]:.3f} | {args.batch_size / median[m]:.1f} | {ratio} | "
              f"{passes[m]} | {costs[m].describe()} |")
    if args.smoke:
        return
    from great_tf.data import load_arrays

    raw = load_arrays("cifar10", "train[:500]", args.data_dir)
    print(f"\nInput pipeline alone: {pipeline_images_per_second(train, args.batch_size):,.0f} images/s")
    print(f"Building the data set (noise + Canny, once per split, then cached): "
          f"{build_images_per_second(raw['image'], raw['label']):,.0f} images/s")


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main)
