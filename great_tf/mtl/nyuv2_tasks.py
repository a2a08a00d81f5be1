"""The NYUv2 tasks: depth and surface normals, with losses and metrics over valid pixels only.

- `DepthTask`: the paper's loss, MSE, here the mean over the example's valid pixels (depth > 0);
  metrics RMSE (the paper's), absolute and relative error, all lower-is-better.
- `NormalsTask`: the paper's loss 1 - |cos| between predicted and target normals, averaged over
  the example's valid pixels (non-zero target); metrics 1 - |cos| (the paper's), mean and median
  angle error (lower is better) and the share of pixels within 11.25°, 22.5° and 30° (higher).

A loss is the per-example mean over valid pixels, so an image with few valid pixels weighs as
much as any other in the batch; metrics pool all valid pixels of the evaluation set
(great_tf/mtl/dense_metrics.py). Each task also draws its targets and predictions for
TensorBoard (`images`, used by great_tf/dense_summaries.py). Docs: docs/design.md#nyuv2.

The paper's third task, 48 room-keypoint heatmaps (pixel-wise squared error), has no public
labels; with your own, `Task("keypoints", "regression", 48)` is that task (its MSE loss and RMSE
metric are the paper's) and needs no code here.
"""

from dataclasses import dataclass

import tensorflow as tf

from great_tf.losses import masked_pixel_mean
from great_tf.mtl import dense_metrics as dm
from great_tf.mtl.tasks import HIGHER, LOWER, Task
from great_tf.precision import full_precision

WITHIN_DEGREES = (11.25, 22.5, 30.0)


def _degrees_key(degrees):
    return f"{degrees:g}".replace(".", "_")


@dataclass(frozen=True)
class DepthTask(Task):
    """Depth in metres, one channel; invalid (zero) target pixels are masked out."""

    name: str = "depth"
    kind: str = "regression"
    units: int = 1

    def per_example_loss(self, target, output):
        output = full_precision(output)
        target = tf.cast(target, output.dtype)
        return masked_pixel_mean(tf.square(output - target)[..., 0], dm.depth_valid(target))

    def make_metrics(self):
        return [dm.DepthRMSE(f"{self.name}_rmse"), dm.DepthAbsError(f"{self.name}_abs_error"),
                dm.DepthRelError(f"{self.name}_rel_error")]

    def metric_labels(self):
        label = self.label or self.name
        return {f"{self.name}_rmse": f"{label} RMSE", f"{self.name}_abs_error": f"{label} abs err",
                f"{self.name}_rel_error": f"{label} rel err"}

    def metric_directions(self):
        return {name: LOWER for name in self.metric_labels()}

    def images(self, target, output):
        """(target, prediction) as grey images in [0, 1], both on the scale of the example's
        largest valid target depth; invalid target pixels are black."""
        target, output = tf.cast(target, tf.float32), full_precision(output)
        top = tf.reduce_max(target, axis=[1, 2, 3], keepdims=True)
        top = tf.where(top > 0, top, 1.0)
        return (tf.image.grayscale_to_rgb(tf.clip_by_value(target / top, 0.0, 1.0)),
                tf.image.grayscale_to_rgb(tf.clip_by_value(output / top, 0.0, 1.0)))


@dataclass(frozen=True)
class NormalsTask(Task):
    """Unit surface normals, three channels; zero target vectors are masked out."""

    name: str = "normals"
    kind: str = "regression"
    units: int = 3

    def per_example_loss(self, target, output):
        return masked_pixel_mean(1.0 - dm.abs_cosine(target, output), dm.normals_valid(target))

    def within_names(self):
        return {d: f"{self.name}_within_{_degrees_key(d)}" for d in WITHIN_DEGREES}

    def make_metrics(self):
        return [dm.NormalCosineError(f"{self.name}_cosine_error"),
                dm.NormalMeanAngle(f"{self.name}_mean_angle"),
                dm.NormalMedianAngle(f"{self.name}_median_angle"),
                *(dm.NormalWithin(d, name) for d, name in self.within_names().items())]

    def metric_labels(self):
        label = self.label or self.name
        labels = {f"{self.name}_cosine_error": f"{label} 1-|cos|",
                  f"{self.name}_mean_angle": f"{label} mean °",
                  f"{self.name}_median_angle": f"{label} median °"}
        labels.update({name: f"{label} <{d:g}° %" for d, name in self.within_names().items()})
        return labels

    def metric_directions(self):
        higher = set(self.within_names().values())
        return {name: HIGHER if name in higher else LOWER for name in self.metric_labels()}

    def images(self, target, output):
        """(target, prediction) as RGB = (n + 1) / 2; the prediction's sign is matched to the
        target's (the loss ignores it); invalid target pixels are black."""
        target, output = dm.unit(target), dm.unit(output)
        flip = tf.reduce_sum(target * output, axis=-1, keepdims=True) < 0
        output = tf.where(flip, -output, output)
        valid = dm.normals_valid(target)[..., None]
        return (tf.where(valid, (target + 1.0) / 2.0, 0.0), (output + 1.0) / 2.0)


NYUV2_TASKS = (DepthTask(), NormalsTask())
