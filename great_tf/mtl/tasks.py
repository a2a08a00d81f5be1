"""A task of a multi-task network: its loss, its metrics and which way each metric improves.

Δm (docs/design.md#mtl-methods) compares every metric of every task against a single-task
baseline; `Task.metric_directions` declares for each metric whether lower or higher is better,
so a new task (depth, surface normals, segmentation, ...) reports correctly without touching the
methods or the tables. Subclass `Task` for a task with its own loss or metrics.
"""

import dataclasses
from dataclasses import dataclass

import keras

from great_tf.losses import mean_squared_error, sparse_ce

LOWER, HIGHER = "lower", "higher"


@keras.saving.register_keras_serializable(package="great_tf")
class ClassError(keras.metrics.SparseCategoricalAccuracy):
    """Classification error in percent (Table 4's first column)."""

    def result(self):
        return 100.0 * (1.0 - super().result())


@keras.saving.register_keras_serializable(package="great_tf")
@dataclass(frozen=True)
class Task:
    """A task: its name (the key of its target and output), kind and output size.

    `kind` is "classification" (integer labels, logits, cross-entropy, % error) or "regression"
    (mean squared error, RMSE).
    """

    name: str
    kind: str
    units: int
    label: str = ""  # the name in table columns (default: `name`)

    # A saved multi-task model holds its tasks (a subclass with fields of its own registers
    # itself with keras.saving.register_keras_serializable too).
    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def per_example_loss(self, target, output):
        if self.kind == "classification":
            return sparse_ce(target, output)
        return mean_squared_error(target, output)

    def make_metrics(self):
        """Fresh Keras metrics reporting this task, named `<task>_<metric>`."""
        if self.kind == "classification":
            return [ClassError(name=f"{self.name}_error")]
        return [keras.metrics.RootMeanSquaredError(name=f"{self.name}_rmse")]

    def metric_labels(self):
        """{metric name: its table column}, e.g. "class_error" -> "class error %"."""
        label = self.label or self.name
        return {m.name: f"{label} error %" if m.name.endswith("_error") else f"{label} RMSE"
                for m in self.make_metrics()}

    def metric_directions(self):
        """{metric name: "lower" or "higher"}: which way each metric of `make_metrics` improves."""
        return {m.name: LOWER for m in self.make_metrics()}


CIFAR10_NOISY_TASKS = (
    Task("class", "classification", 10),
    Task("colour", "regression", 3),
    Task("edges", "regression", 1, label="edge"),
    Task("auto", "regression", 1),
)
