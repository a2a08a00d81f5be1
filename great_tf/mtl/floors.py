"""Each task's metric when the network ignores its input: the floor a method must beat to have
learned the task at all (docs/design.md#evidence).

A multi-task table ranks methods against each other; it does not say whether a task was learned.
The input-free predictor does: the training set's most frequent class for a classification task,
and the training set's per-pixel mean target for a dense one (the best constant map under squared
error). A method whose RMSE sits at this floor has learned no more of the task than where its
targets usually are.
"""

import numpy as np

from great_tf.mtl.tasks import Task


def input_free_metrics(tasks, train_targets, test_targets):
    """{table column: the input-free predictor's metric on the test targets} for each task with
    the plain metrics of `Task` (% error or RMSE); tasks with metrics of their own are left out."""
    floors = {}
    for task in tasks:
        if type(task) is not Task:  # e.g. NYUv2's masked depth and normals
            continue
        (column,) = task.metric_labels().values()
        train, test = np.asarray(train_targets[task.name]), np.asarray(test_targets[task.name])
        if task.categorical:
            majority = np.bincount(train.astype(np.int64).ravel()).argmax()
            floors[column] = 100.0 * float(np.mean(test != majority))
        else:
            mean_map = train.astype(np.float64).mean(axis=0)
            floors[column] = float(np.sqrt(np.mean((test - mean_map) ** 2)))
    return floors


def benchmark_floors(name, data_dir=None, seed=0):
    """`input_free_metrics` on a registered benchmark's training and evaluation splits."""
    from great_tf.mtl.benchmarks import get_benchmark

    benchmark = get_benchmark(name)
    train_split, test_split = benchmark.splits
    _, train = benchmark.load(train_split, data_dir, seed)
    _, test = benchmark.load(test_split, data_dir, seed)
    return input_free_metrics(benchmark.tasks, train, test)
