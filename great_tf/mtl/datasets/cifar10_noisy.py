"""Noisy CIFAR-10 (the paper's Table 4, first half): class, colour, edges, auto from a noisy
grayscale image (docs/design.md#data)."""

from great_tf.mtl.benchmarks import Benchmark, register_benchmark
from great_tf.mtl.network import build_multitask_network
from great_tf.mtl.tasks import CIFAR10_NOISY_TASKS


def load(split, data_dir=None, seed=0, limit=None):
    from great_tf.data import load_cifar10_noisy

    return load_cifar10_noisy(split, data_dir, seed, limit)


register_benchmark(Benchmark(
    name="cifar10_noisy",
    tasks=CIFAR10_NOISY_TASKS,
    load=load,
    network=build_multitask_network,
    description="noisy grayscale CIFAR-10 (salt and pepper 4 %, speckle variance 0.1)",
    paper_rows={  # The paper's Table 4, CIFAR-10 (ResNet-18 width 64, 50 epochs, 50,000 images).
        "equal": {"class_error": 24.0, "colour_rmse": 0.131, "edges_rmse": 0.349, "auto_rmse": 0.113},
        "uncertainty": {"class_error": 26.6, "colour_rmse": 0.111, "edges_rmse": 0.270, "auto_rmse": 0.090},
        "gradnorm": {"class_error": 23.5, "colour_rmse": 0.116, "edges_rmse": 0.270, "auto_rmse": 0.091},
        "great": {"class_error": 24.2, "colour_rmse": 0.114, "edges_rmse": 0.252, "auto_rmse": 0.087},
    },
))
