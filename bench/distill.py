"""Training-step speed of the four distillation methods on one student and teacher.

    python -m bench.distill                       # CNN-5 student, ResNet-18 (width 16) teacher
    python -m bench.distill --width 64 --batch-size 128 --rounds 5

The methods are timed in interleaved rounds (baseline, distillation, Sobolev, GREAT, baseline,
...) so that load from other processes hits them alike; the GREAT / distillation ratio is taken
within each round and the median over rounds reported. Target (issue 4): GREAT's step at most
2.5x the distillation step. GREAT adds one first-order backprop through the teacher (to its
input only) and a double backprop through the student, plus the discriminator.
"""

import os
import time

import numpy as np

METHODS = ("baseline", "distill", "sobolev", "great")
TARGET = 2.5


def parse_args(argv=None):
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m bench.distill", description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="cnn5", choices=("cnn5", "resnet18"))
    parser.add_argument("--student-width", type=flags.positive_int, default=None, help="default: the paper's")
    parser.add_argument("--teacher", default="resnet18", choices=("resnet18", "resnext29", "cnn5"))
    parser.add_argument("--width", type=flags.positive_int, default=16, help="teacher width (paper: 64)")
    parser.add_argument("--batch-size", type=flags.positive_int, default=64)
    parser.add_argument("--steps", type=flags.positive_int, default=10, help="timed steps per method per round")
    parser.add_argument("--rounds", type=flags.positive_int, default=3)
    parser.add_argument("--logdir", default=os.path.join("runs", "bench"))
    parser.add_argument("--seed", type=flags.seed_type, default=0)
    return parser.parse_args(argv)


def make_models(args):
    import keras

    from great_tf import distill
    from great_tf.distill.experiment import PAPER_WIDTH, build_discriminator, build_network

    shape, classes = (32, 32, 3), 10
    width = args.student_width or PAPER_WIDTH[args.student]
    keras.utils.set_random_seed(args.seed)
    teacher = build_network(args.teacher, shape, classes, args.width)
    teacher.trainable = False
    models = {}
    for method in METHODS:
        keras.utils.set_random_seed(args.seed)
        student = build_network(args.student, shape, classes, width)
        disc = build_discriminator(args.student, shape, width) if method == "great" else None
        models[method] = distill.compile_distiller(
            distill.build_distiller(method, teacher, student, disc), 100, 10)
    from great_tf.models.resnet import check_onednn_batch

    for model in models.values():
        check_onednn_batch(model, args.batch_size)  # one line, not a crash
    return models


def step_runner(model, batch):
    """A callable running `n` compiled train steps on a fixed batch and waiting for them."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(dataset)
    model.make_train_function()  # Keras 3 stores it in model.train_function
    train = model.train_function

    def run(n):
        for _ in range(n):
            logs = train(iterator)
        float(logs["loss"])  # blocks until the last step has finished

    return run


def benchmark(args):
    import tensorflow as tf

    rng = np.random.default_rng(args.seed)
    batch = (tf.constant(rng.uniform(size=(args.batch_size, 32, 32, 3)), tf.float32),
             tf.constant(rng.integers(0, 10, args.batch_size), tf.int32))
    runners = {m: step_runner(model, batch) for m, model in make_models(args).items()}
    for run in runners.values():
        run(2)  # trace and warm up
    seconds = {m: [] for m in METHODS}
    for _ in range(args.rounds):
        for method, run in runners.items():
            start = time.perf_counter()
            run(args.steps)
            seconds[method].append((time.perf_counter() - start) / args.steps)
    return seconds


def report(seconds, args):
    from great_tf.reporting import write_table

    per_step = {m: float(np.median(s)) for m, s in seconds.items()}
    ratios = np.array(seconds["great"]) / np.array(seconds["distill"])
    rows = [{"method": m, "steps/s": 1.0 / per_step[m], "ms/step": 1000.0 * per_step[m],
             "x distillation": per_step[m] / per_step["distill"]} for m in METHODS]
    ratio = float(np.median(ratios))
    notes = [
        f"Student {args.student}, teacher {args.teacher} width {args.width}, batch {args.batch_size}, "
        f"{os.cpu_count()} CPU cores, {args.rounds} interleaved rounds of {args.steps} steps "
        f"(median per step).",
        f"GREAT / distillation, measured side by side: {ratio:.2f}x (per-round "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); target <= {TARGET}x: "
        f"{'met' if ratio <= TARGET else 'NOT met'}.",
    ]
    stem = os.path.join(args.logdir, f"distill_{args.student}_{args.teacher}{args.width}")
    text = write_table(rows, ["method", "steps/s", "ms/step", "x distillation"], stem,
                       title="Distillation training-step speed", notes=notes,
                       formats={"steps/s": ".2f", "ms/step": ".0f", "x distillation": ".2f"})
    print("\n" + text + f"\n\n(written to {stem}.md, .csv and .json)")
    return ratio


def main(argv=None):
    args = parse_args(argv)
    return report(benchmark(args), args)


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main)
