"""Defense step and attack throughput, measured side by side in one process.

    python -m bench.defense                       # widths 16 and 64, batch 128 (CIFAR-10 shape)
    python -m bench.defense --widths 16 --batch-size 64 --steps 3

For each width: images per second of one compiled training step of every mode on the same
ResNet-18 (same random data), timed in interleaved rounds (medians), and the GREAT+CE step time
over the baseline step time (target: at most 3x). `--floor` adds the same two steps with every
BatchNorm replaced by the identity: a GREAT step runs three times the baseline's convolutions
(forward, input-gradient and filter-gradient kernels each three times per layer), so that ratio is
what the convolutions alone cost, below which normalization cannot bring the step. Then the attack
throughput of compiled iFGSM (great_tf.attacks, one tf.function with a while loop) against a plain
eager Python loop over the same k signed-gradient steps.
"""

import statistics
import time

import numpy as np


def step_timer(model, x, y, steps):
    """A function returning seconds per step of `model.train_step`, compiled, after a warm-up."""
    import tensorflow as tf

    step = tf.function(model.train_step)
    data = (tf.constant(x), tf.constant(y))
    step(data)  # trace and warm up outside the timing

    def run():
        start = time.perf_counter()
        for _ in range(steps):
            logs = step(data)
        float(logs["loss"])  # wait for the last step
        return (time.perf_counter() - start) / steps

    return run


def median_step_seconds(modes, width, batch_size, steps, rounds):
    """Median seconds per step of each mode, timed in interleaved rounds so load drift hits all."""
    import keras

    from great_tf.defense import build_defense
    from great_tf.models.resnet import check_onednn_batch

    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch_size).astype(np.int32)
    timers = {}
    for mode in modes:
        keras.utils.set_random_seed(0)
        model = build_defense(mode, (32, 32, 3), 10, width, steps_per_epoch=1, epochs=2)
        check_onednn_batch(model, batch_size)  # one line, not a crash
        model.optimizer.iterations.assign(1)  # epoch 1: alpha, beta > 0, the full step runs
        timers[mode] = step_timer(model, x, y, steps)
    # One untimed round: the first call of a step after other models were built is slow (seconds
    # at tiny sizes, Keras and TensorFlow rebuilding what the next model's construction replaced),
    # and a timed round with it reported a GREAT+CE step of 0.1x the baseline's.
    for mode in modes:
        timers[mode]()
    seconds = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            seconds[mode].append(timers[mode]())
    return {mode: statistics.median(s) for mode, s in seconds.items()}


def bench_modes(width, batch_size, steps, rounds):
    from great_tf.defense import MODES

    rows = median_step_seconds(MODES, width, batch_size, steps, rounds)
    for mode, median in rows.items():
        print(f"width {width:3d} {mode:12s} {median:7.3f} s/step {batch_size / median:8.1f} images/s "
              f"{median / rows['baseline']:5.2f}x baseline", flush=True)
    ratio = rows["great+ce"] / rows["baseline"]
    print(f"width {width:3d} GREAT+CE / baseline step: {ratio:.2f}x (target <= 3x)", flush=True)
    return rows, ratio


class Identity:
    """Stands in for `batch_norm()` in the --floor measurement."""

    def __call__(self, x):
        return x


def bench_floor(width, batch_size, steps, rounds):
    """GREAT+CE / baseline with no normalization layers at all (see the module docstring)."""
    import importlib
    from unittest import mock

    blocks = importlib.import_module("great_tf.models.blocks")
    resnet = importlib.import_module("great_tf.models.resnet")  # the package's `resnet` is a function
    with mock.patch.object(blocks, "batch_norm", lambda **_: Identity()), \
            mock.patch.object(resnet, "batch_norm", lambda **_: Identity()):
        seconds = median_step_seconds(("baseline", "great+ce"), width, batch_size, steps, rounds)
    ratio = seconds["great+ce"] / seconds["baseline"]
    print(f"width {width:3d} without BatchNorm: baseline {seconds['baseline']:.3f} s, great+ce "
          f"{seconds['great+ce']:.3f} s, {ratio:.2f}x (the convolutions' floor)", flush=True)
    return ratio


def bench_attack(width, batch_size, k):
    import tensorflow as tf

    from great_tf import attacks
    from great_tf.models import resnet18

    model = resnet18((32, 32, 3), 10, width)
    x = tf.constant(np.random.default_rng(1).random((batch_size, 32, 32, 3), dtype=np.float32))
    y = tf.constant(np.zeros(batch_size, np.int32))
    eps, step = 0.1, attacks.default_eps_iter(0.1, k)

    def eager_ifgsm():
        x_adv = x
        for _ in range(k):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = tf.reduce_sum(attacks.ce_loss(y, model(x_adv)))
            x_adv = x_adv + step * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)
        return x_adv

    def compiled():
        return attacks.iterative_fgsm(model, x, eps, eps_iter=step, nb_iter=k, y=y)

    results = {}
    for name, fn in (("compiled iFGSM", compiled), ("eager loop", eager_ifgsm)):
        out = fn()  # warm-up / trace
        start = time.perf_counter()
        out = fn()
        float(tf.reduce_sum(out))
        results[name] = batch_size / (time.perf_counter() - start)
        print(f"width {width:3d} {name:15s} k={k}: {results[name]:8.1f} images/s", flush=True)
    np.testing.assert_allclose(compiled().numpy(), eager_ifgsm().numpy(), atol=1e-5)
    print(f"width {width:3d} compiled / eager: {results['compiled iFGSM'] / results['eager loop']:.2f}x",
          flush=True)
    return results


def main(argv=None):
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m bench.defense", description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=flags.positive_int, nargs="+", default=[16, 64])
    parser.add_argument("--batch-size", type=flags.positive_int, default=128)
    parser.add_argument("--steps", type=flags.positive_int, default=3, help="timed steps per mode per round")
    parser.add_argument("--rounds", type=flags.positive_int, default=3,
                        help="interleaved rounds; medians are reported")
    parser.add_argument("--attack-batch", type=flags.positive_int, default=256)
    parser.add_argument("--k", type=flags.positive_int, default=10)
    parser.add_argument("--floor", action="store_true",
                        help="also time baseline and great+ce with no BatchNorm layers")
    args = parser.parse_args(argv)
    for width in args.widths:
        bench_modes(width, args.batch_size, args.steps, args.rounds)
        if args.floor:
            bench_floor(width, args.batch_size, args.steps, args.rounds)
    for width in args.widths:
        bench_attack(width, args.attack_batch, args.k)


if __name__ == "__main__":
    from trainers.flags import run_cli

    run_cli(main, interrupted_hint=None)  # a benchmark has nothing to resume
