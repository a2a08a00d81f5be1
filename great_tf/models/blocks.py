"""Building blocks shared by every network in great_tf, with the one normalization choice.

Every BatchNormalization in the library is `ExactBatchNorm` (great_tf.models.normalization). Keras
3's default layer computes the batch variance with a stop-gradient on the mean, which makes
second-order gradients wrong (docs/design.md#exactness; `tests/test_normalization.py` measures it with
float64 finite differences). `ExactBatchNorm` has hand-written first and second derivatives, runs
the fused kernel on one device, and under a `tf.distribute` strategy pools statistics across
replicas, so a distributed step normalizes exactly like a single-device step.

Its momentum is 0.9 (PyTorch's default, which the paper's code would have used), not Keras' 0.99:
a 0.99 average lags ~100 steps behind weights that move fast in short runs, and inference-mode
accuracy then collapses (measured on CNN-5: 19 % at test against 52 % in training mode after 312
steps). Training-mode outputs and every gradient are unaffected.
"""

import keras

from great_tf.models.normalization import ExactBatchNorm

ACTIVATIONS = ("relu", "leaky_relu")


BATCH_NORM_MOMENTUM = 0.9


def batch_norm(name=None, momentum=BATCH_NORM_MOMENTUM):
    return ExactBatchNorm(momentum=momentum, name=name)


def activation(kind, name=None):
    if kind == "relu":
        return keras.layers.ReLU(name=name)
    if kind == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.2, name=name)
    raise ValueError(f"unknown activation {kind!r}: use one of {ACTIVATIONS}")


def conv(filters, kernel_size, strides=1, name=None):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )


def conv_bn_act(x, filters, kernel_size=3, strides=1, act="relu", name="conv"):
    x = conv(filters, kernel_size, strides, name=f"{name}_conv")(x)
    x = batch_norm(name=f"{name}_bn")(x)
    return activation(act, name=f"{name}_{act}")(x)


def basic_block(x, filters, strides=1, act="relu", name="block"):
    """The ResNet basic block: two 3x3 convolutions and a (projected where needed) shortcut."""
    y = conv_bn_act(x, filters, 3, strides, act, name=f"{name}_a")
    y = conv(filters, 3, name=f"{name}_b_conv")(y)
    y = batch_norm(name=f"{name}_b_bn")(y)
    return residual_output(x, y, strides, act, name)


def residual_output(x, y, strides, act, name):
    """act(y + shortcut(x)); the shortcut is projected by a 1x1 convolution where shapes differ."""
    shortcut = x
    if strides != 1 or x.shape[-1] != y.shape[-1]:
        shortcut = conv(y.shape[-1], 1, strides, name=f"{name}_proj_conv")(x)
        shortcut = batch_norm(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation(act, name=f"{name}_out_{act}")(y)


def scaled(channels, width, base=64):
    """Channel count of a layer that has `channels` at the paper's base width 64."""
    return max(1, channels * width // base)
