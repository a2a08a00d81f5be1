"""TensorBoard images of dense predictions (depth, normals) next to their targets.

`DensePredictionImages(logdir, probe, tasks)` writes, at the start of training and after every
epoch, the probe batch's inputs (`images/input`) and, for every task that can draw itself
(`task.images(target, output)`, great_tf/mtl/nyuv2_tasks.py), one image per example with the
target on the left and the model's prediction (inference mode) on the right
(`images/<task>`), to `<logdir>/images`. Docs: docs/design.md#nyuv2.
"""

import numpy as np
import tensorflow as tf

from great_tf.summaries import EpochSummaryWriter

SEPARATOR = 2  # white columns between the target and the prediction


def side_by_side(left, right):
    """(N, H, W, 3) pairs -> (N, H, 2W + SEPARATOR, 3), a white gap between them."""
    gap = tf.ones_like(left[:, :, :SEPARATOR])
    return tf.concat([left, gap, right], axis=2)


class DensePredictionImages(EpochSummaryWriter):
    """Targets and predictions of the dense tasks on a fixed probe batch, as TensorBoard images."""

    def __init__(self, logdir, probe, tasks, max_images=4, subdir="images"):
        super().__init__(logdir, subdir)
        x, y = probe
        self.x = np.asarray(x)[:max_images]
        self.y = {name: np.asarray(v)[:max_images] for name, v in y.items()}
        self.tasks = [t for t in tasks if hasattr(t, "images")]
        self.max_images = max_images

    def pictures(self):
        """{tag: (N, H, W', 3) float images in [0, 1]} for the model's current predictions."""
        outputs = self.model(tf.convert_to_tensor(self.x, tf.float32), training=False)
        pictures = {}
        if self.x.ndim == 4 and self.x.shape[-1] in (1, 3):
            pictures["images/input"] = tf.clip_by_value(tf.cast(self.x, tf.float32), 0.0, 1.0)
        for task in self.tasks:
            target, prediction = task.images(self.y[task.name], outputs[task.name])
            pictures[f"images/{task.name}"] = side_by_side(target, prediction)
        return pictures

    def summarize(self):
        for tag, images in self.pictures().items():
            tf.summary.image(tag, images, max_outputs=self.max_images)
