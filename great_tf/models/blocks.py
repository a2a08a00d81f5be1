"""Building blocks shared by every network in great_tf, with the one normalization choice.

Every BatchNormalization in the library is `synchronized=True`. Keras 3's default layer computes the
batch variance with a stop-gradient on the mean, which makes second-order gradients wrong
(DESIGN.md section 5; `tests/test_models.py` measures it with float64 finite differences). The
synchronized layer computes E[x^2] - E[x]^2 with no stop-gradient, so it is exact under double
backprop, and under a `tf.distribute` strategy it also pools statistics across replicas, so a
distributed step normalizes exactly like a single-device step.
"""

import keras

ACTIVATIONS = ("relu", "leaky_relu")


def batch_norm(name=None):
    return keras.layers.BatchNormalization(synchronized=True, name=name)


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
    shortcut = x
    y = conv_bn_act(x, filters, 3, strides, act, name=f"{name}_a")
    y = conv(filters, 3, name=f"{name}_b_conv")(y)
    y = batch_norm(name=f"{name}_b_bn")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides, name=f"{name}_proj_conv")(x)
        shortcut = batch_norm(name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation(act, name=f"{name}_out_{act}")(y)


def scaled(channels, width, base=64):
    """Channel count of a layer that has `channels` at the paper's base width 64."""
    return max(1, channels * width // base)
