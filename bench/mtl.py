"""Throughput of the multi-task methods, measured side by side in one run.

    python -m bench.mtl                       # width 16, batch 64
    python -m bench.mtl --width 64 --batch-size 128 --steps 5

Every method trains the same network on the same real noisy-CIFAR-10 batches. Methods are timed
in interleaved rounds (round r times every method once) so that machine load drifts hit them all
alike; each method's figure is its median step time over rounds. Also measured: the input
pipeline alone, and building the data set (noise and Canny edges) once.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    from great_tf.mtl import available_methods
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m bench.mtl", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=flags.positive_int, default=16)
    parser.add_argument("--batch-size", type=flags.positive_int, default=64)
    parser.add_argument("--steps", type=flags.positive_int, default=10, help="timed steps per method per round")
    parser.add_argument("--rounds", type=flags.positive_int, default=3)
    parser.add_argument("--methods", type=flags.choice_list(available_methods()),
                        default=["equal", "great", "uncertainty", "gradnorm"],
                        help="comma-separated, from " + ",".join(available_methods()))
    parser.add_argument("--data-dir", type=flags.existing_dir)
    return parser.parse_args(argv)


def step_timer(method, width, batches):
    """A function that runs the compiled train step over `batches` and returns seconds per step."""
    import tensorflow as tf

    from great_tf import mtl

    from great_tf.models.resnet import check_onednn_batch

    model = mtl.build_mtl_model(method, batches[0][0].shape[1:], width=width)
    check_onednn_batch(model, int(batches[0][0].shape[0]))  # one line, not a crash
    mtl.compile_mtl(model, steps_per_epoch=1000, epochs=1)
    step = tf.function(model.train_step)
    step(batches[0])  # trace and warm up outside the timing

    def run():
        start = time.perf_counter()
        for batch in batches:
            logs = step(batch)
        float(logs["loss"])  # wait for the last step
        return (time.perf_counter() - start) / len(batches)

    return run


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
    import tensorflow as tf

    from great_tf.data import load_arrays, load_cifar10_noisy

    args = parse_args(argv)
    methods = args.methods
    train = load_cifar10_noisy("train", args.data_dir, seed=0)
    x, y = train
    batches = []
    for i in range(args.steps):
        part = slice(i * args.batch_size, (i + 1) * args.batch_size)
        batches.append((tf.constant(x[part]), {k: tf.constant(v[part]) for k, v in y.items()}))

    timers = {m: step_timer(m, args.width, batches) for m in methods}
    seconds = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            seconds[m].append(timers[m]())
    median = {m: statistics.median(s) for m, s in seconds.items()}

    raw = load_arrays("cifar10", "train[:500]", args.data_dir)
    print(f"\nMulti-task train step, ResNet-18 width {args.width}, batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds, {tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} threads")
    print("| method | s/step (median) | images/s | vs equal |")
    print("|---|---|---|---|")
    for m in methods:
        ratio = median[m] / median["equal"] if "equal" in median else float("nan")
        print(f"| {m} | {median[m]:.3f} | {args.batch_size / median[m]:.1f} | {ratio:.2f}x |")
    print(f"\nInput pipeline alone: {pipeline_images_per_second(train, args.batch_size):,.0f} images/s")
    print(f"Building the data set (noise + Canny, once per split, then cached): "
          f"{build_images_per_second(raw['image'], raw['label']):,.0f} images/s")


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main)
