"""Streaming metrics of dense predictions over valid pixels only (depth, surface normals).

Every metric pools the valid pixels of the whole evaluation set: each valid pixel counts once,
whatever image it is in (not a mean of per-image values). A pixel is valid where its target is:
depth > 0, a non-zero normal vector (great_tf/data/nyuv2.py marks invalid pixels that way).
Sums and counts are float64, so 100 million pixels (the paper's test split at 80x80) add up
without rounding drift. Docs: docs/design.md#nyuv2.

Angles between normals ignore the sign, like the paper's loss 1 - |cos|: a network trained on
it has no reason to prefer n over -n, so the angle is the one between the two axes, in
[0°, 90°]. The median angle comes from a histogram of angles with `ANGLE_BIN` = 0.01° bins
(9,000 counts): the middle pixel's angle lies in the bin found, so the reported value
(interpolated within that bin) is within 0.01° of it (of the lower middle one for an even count;
over millions of pixels the two middle values differ by far less than a bin).
"""

import math

import keras
import tensorflow as tf

ANGLE_BIN = 0.01  # degrees
MAX_ANGLE = 90.0
EPSILON = 1e-12


def _full(x):
    return tf.cast(x, tf.float32)


def depth_valid(target):
    """(N, H, W, 1) depth targets -> (N, H, W) bool: where the depth is known."""
    return _full(target)[..., 0] > 0


def normals_valid(target):
    """(N, H, W, 3) normal targets -> (N, H, W) bool: where a normal is known."""
    return tf.reduce_sum(tf.square(_full(target)), axis=-1) > 0


def unit(vectors):
    """Vectors scaled to unit length; a zero vector stays zero (no NaN, no infinite gradient)."""
    vectors = _full(vectors)
    return vectors * tf.math.rsqrt(tf.reduce_sum(tf.square(vectors), -1, keepdims=True) + EPSILON)


def abs_cosine(target, output):
    """|cos| of the angle between target and predicted normals, per pixel (N, H, W)."""
    return tf.abs(tf.reduce_sum(unit(target) * unit(output), axis=-1))


def angle_degrees(target, output):
    """The angle between the target's and the prediction's axes, per pixel, in [0°, 90°]."""
    return tf.acos(tf.clip_by_value(abs_cosine(target, output), 0.0, 1.0)) * (180.0 / math.pi)


@keras.saving.register_keras_serializable(package="great_tf")
class MaskedPixelMean(keras.metrics.Metric):
    """The mean of a per-pixel value over every valid pixel seen; subclasses define the value."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def pixel_values(self, y_true, y_pred):
        """(values (N, H, W), valid (N, H, W) bool)."""
        raise NotImplementedError

    def finish(self, mean):
        return mean

    def update_state(self, y_true, y_pred, sample_weight=None):
        values, valid = self.pixel_values(y_true, y_pred)
        # tf.where, not a product: an invalid pixel's value may be inf (a relative error at 0).
        values = tf.where(valid, tf.cast(values, tf.float64), tf.zeros([], tf.float64))
        self.total.assign_add(tf.reduce_sum(values))
        self.count.assign_add(tf.reduce_sum(tf.cast(valid, tf.float64)))

    def result(self):
        return tf.cast(self.finish(self.total / tf.maximum(self.count, 1.0)), tf.float32)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="great_tf")
class DepthRMSE(MaskedPixelMean):
    """sqrt(mean (prediction - depth)^2) over valid pixels, in metres (the paper's metric)."""

    def pixel_values(self, y_true, y_pred):
        return tf.square(_full(y_pred) - _full(y_true))[..., 0], depth_valid(y_true)

    def finish(self, mean):
        return tf.sqrt(mean)


@keras.saving.register_keras_serializable(package="great_tf")
class DepthAbsError(MaskedPixelMean):
    """Mean |prediction - depth| over valid pixels, in metres."""

    def pixel_values(self, y_true, y_pred):
        return tf.abs(_full(y_pred) - _full(y_true))[..., 0], depth_valid(y_true)


@keras.saving.register_keras_serializable(package="great_tf")
class DepthRelError(MaskedPixelMean):
    """Mean |prediction - depth| / depth over valid pixels."""

    def pixel_values(self, y_true, y_pred):
        valid = depth_valid(y_true)
        depth = _full(y_true)[..., 0]
        error = tf.abs(_full(y_pred)[..., 0] - depth)
        return error / tf.where(valid, depth, 1.0), valid


@keras.saving.register_keras_serializable(package="great_tf")
class NormalCosineError(MaskedPixelMean):
    """Mean 1 - |cos| over valid pixels (the paper's normals metric)."""

    def pixel_values(self, y_true, y_pred):
        return 1.0 - abs_cosine(y_true, y_pred), normals_valid(y_true)


@keras.saving.register_keras_serializable(package="great_tf")
class NormalMeanAngle(MaskedPixelMean):
    """Mean angle error in degrees over valid pixels."""

    def pixel_values(self, y_true, y_pred):
        return angle_degrees(y_true, y_pred), normals_valid(y_true)


@keras.saving.register_keras_serializable(package="great_tf")
class NormalWithin(MaskedPixelMean):
    """The share (%) of valid pixels whose angle error is below `degrees` (higher is better)."""

    def __init__(self, degrees, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.degrees = float(degrees)

    def pixel_values(self, y_true, y_pred):
        within = tf.cast(angle_degrees(y_true, y_pred) < self.degrees, tf.float32)
        return within, normals_valid(y_true)

    def finish(self, mean):
        return 100.0 * mean

    def get_config(self):
        return {**super().get_config(), "degrees": self.degrees}


@keras.saving.register_keras_serializable(package="great_tf")
class NormalMedianAngle(keras.metrics.Metric):
    """The median angle error in degrees over valid pixels, from a histogram of `bin_width` bins
    (the result is within one bin of the exact median)."""

    def __init__(self, name, bin_width=ANGLE_BIN, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.bin_width = float(bin_width)
        self.bins = int(math.ceil(MAX_ANGLE / self.bin_width))
        self.counts = self.add_variable(shape=(self.bins,), initializer="zeros", dtype="float64",
                                        name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        valid = normals_valid(y_true)
        angles = tf.boolean_mask(angle_degrees(y_true, y_pred), valid)
        index = tf.cast(tf.floor(angles / self.bin_width), tf.int32)
        index = tf.clip_by_value(index, 0, self.bins - 1)  # 90° exactly: the last bin
        self.counts.assign_add(tf.math.unsorted_segment_sum(
            tf.ones_like(angles, tf.float64), index, self.bins))

    def result(self):
        counts = tf.convert_to_tensor(self.counts)
        cumulative = tf.cumsum(counts)
        half = cumulative[-1] / 2.0
        k = tf.minimum(tf.reduce_sum(tf.cast(cumulative < half, tf.int32)), self.bins - 1)
        before = tf.where(k > 0, tf.gather(cumulative, tf.maximum(k - 1, 0)), 0.0)
        inside = (half - before) / tf.maximum(tf.gather(counts, k), 1.0)
        median = (tf.cast(k, tf.float64) + inside) * self.bin_width
        return tf.cast(tf.where(cumulative[-1] > 0, median, 0.0), tf.float32)

    def get_config(self):
        return {"name": self.name, "bin_width": self.bin_width, "dtype": self.dtype}
