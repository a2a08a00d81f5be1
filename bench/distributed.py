"""Throughput of the three GREAT train steps on 1 and 2 CPU replicas, with and without XLA.

    python -m bench.distributed                       # width 8, global batch 32
    python -m bench.distributed --width 16 --batch-size 64 --steps 5
    python -m bench.distributed --smoke               # seconds: width 2, one step, one round

One process, side by side: the CPU is split into two logical devices before TensorFlow starts;
"1 replica" is the default strategy (/cpu:0), "2 replicas" is MirroredStrategy over /cpu:0 and
/cpu:1 with the same global batch. Every model is the library's own (ResNet-18 multi-task GREAT;
CNN-5 student, ResNet-18 teacher and CNN-5 discriminator; ResNet-18 defense main and auxiliary,
great+ce), on random inputs of the real shapes. Each cell traces and warms up its train function
(the compiled step `fit` runs), then times `--steps` calls of it (the median of --rounds): the
steady-state step, without what every `fit` call costs once (building the distributed iterator,
callbacks). XLA with 2 replicas is refused (see great_tf.distribute.enable_jit), so that cell is
empty.

Next to the throughput: the all-reduces per step on 2 replicas, counted on the traced step
(`great_tf.step_costs`: collective ops in the graph, by source: synchronized BatchNorm, the
optimizers' gradient sums, the method's own), and the broadcasts (writes of variables that copy
replica 0's value to the other replicas).

What the CPU figures predict: the XLA column is a fair first look at what fusion does to these
steps. The 2-replica column is not a GPU speed-up: both logical devices share the same cores, so it
measures the cost of splitting the batch and all-reducing (synchronized BatchNorm, gradients), not
extra hardware.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 32
CLASSES = 10


TRAINERS = ("mtl", "distill", "defense")


def parse_args(argv=None):
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m bench.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=flags.positive_int, default=8, help="ResNet-18 first-stage channels")
    parser.add_argument("--batch-size", type=flags.positive_int, default=32, help="global batch size")
    parser.add_argument("--steps", type=flags.positive_int, default=5, help="timed steps per cell and round")
    parser.add_argument("--rounds", type=flags.positive_int, default=2)
    parser.add_argument("--trainers", type=flags.choice_list(TRAINERS), default=list(TRAINERS),
                        help="comma-separated, from " + ",".join(TRAINERS))
    parser.add_argument("--smoke", action="store_true",
                        help="a check that the benchmark runs, in seconds: width 2, batch 8, one "
                        "step, one round (figures meaningless)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.width, args.batch_size, args.steps, args.rounds = 2, 8, 1, 1
    return args


def build(trainer, width):
    """(compiled GREAT model, one batch of random data) for `trainer`."""
    import numpy as np

    from great_tf import defense, distill, models, mtl

    rng = np.random.default_rng(0)
    if trainer == "mtl":
        model = mtl.compile_mtl(mtl.build_mtl_model("great", (SIZE, SIZE, 1), width=width), 100, 1)
        y = {"class": rng.integers(0, CLASSES, (1,)), "colour": rng.random((1, SIZE, SIZE, 3)),
             "edges": rng.random((1, SIZE, SIZE, 1)), "auto": rng.random((1, SIZE, SIZE, 1))}
        return model, (rng.random((1, SIZE, SIZE, 1)), y)
    x, y = rng.random((1, SIZE, SIZE, 3)), rng.integers(0, CLASSES, (1,))
    if trainer == "distill":
        teacher = models.resnet18((SIZE, SIZE, 3), CLASSES, width, name="teacher")
        student = models.cnn5((SIZE, SIZE, 3), CLASSES, 32)
        disc = models.cnn5_discriminator((SIZE, SIZE, 3), 32)
        model = distill.build_distiller("great", teacher, student, disc)
        return distill.compile_distiller(model, 100, 1), (x, y)
    return defense.build_defense("great+ce", (SIZE, SIZE, 3), CLASSES, width, 100, 1), (x, y)


def timer(trainer, width, batch_size, strategy, jit):
    """(a function returning seconds per step of `trainer` under `strategy`, traced and warmed up
    here; the step's `CrossReplicaCosts` under a strategy with several replicas, else None)."""
    import numpy as np
    import tensorflow as tf

    from great_tf.distribute import prepare_for_strategy
    from great_tf.models.resnet import check_onednn_batch
    from great_tf.step_costs import cross_replica_costs

    with strategy.scope():
        model, example = build(trainer, width)
        model = prepare_for_strategy(model, strategy)  # as the trainers do
    check_onednn_batch(model, batch_size, strategy.num_replicas_in_sync)  # one line, not a crash
    model.jit_compile = jit
    floats = lambda a: a.astype(np.float32) if a.dtype == np.float64 else a  # noqa: E731
    batch = tf.nest.map_structure(lambda a: np.repeat(floats(a), batch_size, 0), example)
    costs = (cross_replica_costs(model, batch, strategy) if strategy.num_replicas_in_sync > 1
             else None)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(strategy.experimental_distribute_dataset(data))
    model.make_train_function()
    step = model.train_function

    def finish(outputs):
        """Waits for the step: reads its logs."""
        if isinstance(outputs, tf.experimental.Optional):
            outputs = outputs.get_value()
        return tf.nest.map_structure(lambda t: np.asarray(strategy.experimental_local_results(t)[0])
                                     if hasattr(t, "values") else np.asarray(t), outputs)

    finish(step(iterator))  # trace and warm up

    def run(steps):
        start = time.perf_counter()
        for _ in range(steps):
            outputs = step(iterator)
        finish(outputs)
        return (time.perf_counter() - start) / steps

    return run, costs


def main(argv=None):
    args = parse_args(argv)
    from great_tf.distribute import configure_cpu_replicas

    configure_cpu_replicas(2)  # before TensorFlow initialises
    import tensorflow as tf

    from great_tf.mtl.experiment import quiet_retracing_warnings

    quiet_retracing_warnings()  # every cell traces its own model's train function

    cells = {"1 replica": (tf.distribute.get_strategy(), False),
             "1 replica + XLA": (tf.distribute.get_strategy(), True),
             "2 replicas": (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), False)}
    trainers = args.trainers
    timers, costs = {}, {}
    for trainer in trainers:
        for cell, (strategy, jit) in cells.items():
            print(f"tracing {trainer}, {cell}...", flush=True)
            timers[trainer, cell], found = timer(trainer, args.width, args.batch_size, strategy, jit)
            costs[trainer] = found or costs.get(trainer)
    seconds = {key: [] for key in timers}
    for _ in range(args.rounds):  # interleaved, so that load drifts hit every cell alike
        for key, run in timers.items():
            seconds[key].append(run(args.steps))
    median = {key: statistics.median(s) for key, s in seconds.items()}

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"\nGREAT train steps, images/s (s/step), global batch {args.batch_size}, ResNet-18 width "
          f"{args.width}, {args.steps} steps x {args.rounds} rounds, median; {os.cpu_count()} CPU "
          f"cores ({threads} threads), TensorFlow {tf.__version__}")
    print("| step | " + " | ".join(cells) + " | 2 replicas + XLA | 2 replicas vs 1 | "
          "all-reduces per step (2 replicas) | broadcasts |")
    print("|---" * (len(cells) + 5) + "|")
    for trainer in trainers:
        row = [f"{args.batch_size / median[trainer, c]:.1f} ({median[trainer, c]:.3f})" for c in cells]
        slower = median[trainer, "2 replicas"] / median[trainer, "1 replica"]
        print(f"| {trainer} | " + " | ".join(row) + f" | refused | {slower:.2f}x slower | "
              f"{costs[trainer].describe()} | {costs[trainer].broadcasts} |")


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main)
