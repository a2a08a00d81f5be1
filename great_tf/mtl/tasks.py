"""A task of a multi-task network: its loss, its metrics and which way each metric improves.

Δm (docs/design.md#mtl-methods) compares every metric of every task against a single-task
baseline; `Task.metric_directions` declares for each metric whether lower or higher is better,
so a new task (depth, surface normals, segmentation, ...) reports correctly without touching the
methods or the tables. Subclass `Task` for a task with its own loss or metrics.
"""

import dataclasses
from dataclasses import dataclass

import keras
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.losses import mean_squared_error, sparse_ce
from great_tf.precision import full_precision

LOWER, HIGHER = "lower", "higher"


@keras.saving.register_keras_serializable(package="great_tf")
class ClassError(keras.metrics.SparseCategoricalAccuracy):
    """Classification error in percent (Table 4's first column)."""

    def result(self):
        return 100.0 * (1.0 - super().result())


KINDS = ("classification", "segmentation", "regression")


def per_pixel_ce(target, output):
    """Cross-entropy of integer labels per pixel ([B, H, W] or [B, H, W, 1]) against per-pixel
    logits [B, H, W, C], averaged over the example's pixels."""
    output = full_precision(output)
    labels = tf.cast(tf.reshape(target, tf.shape(output)[:-1]), tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=output)
    return tf.reduce_mean(tf.reshape(ce, [tf.shape(ce)[0], -1]), axis=1)


@keras.saving.register_keras_serializable(package="great_tf")
@dataclass(frozen=True)
class Task:
    """A task: its name (the key of its target and output), kind and output size.

    `kind` is "classification" (an integer label per example, `units` logits, cross-entropy,
    % error), "segmentation" (an integer label per pixel, `units` logits per pixel, the
    cross-entropy averaged over the pixels, % pixel error) or "regression" (mean squared error,
    RMSE). Classification and segmentation need `units` >= 2 classes: a binary task is
    `units=2` with labels 0 and 1 (one logit would give a softmax that is always 1).
    """

    name: str
    kind: str
    units: int
    label: str = ""  # the name in table columns (default: `name`)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise GreatError(f"task {self.name!r} has kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.categorical and self.units < 2:
            raise GreatError(f"the {self.kind} task {self.name!r} has {self.units} class: give "
                             f"units=2 for a binary task (labels 0 and 1), one logit per class")

    @property
    def categorical(self):
        """Whether the targets are class labels (per example or per pixel)."""
        return self.kind in ("classification", "segmentation")

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
        if self.kind == "segmentation":
            return per_pixel_ce(target, output)
        return mean_squared_error(target, output)

    def make_metrics(self):
        """Fresh Keras metrics reporting this task, named `<task>_<metric>`."""
        if self.categorical:
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
