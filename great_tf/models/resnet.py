"""CIFAR-style ResNets: 3x3 stem, no max-pool, four stages (He et al. 2016, as used by the paper).

`width` is the first stage's channel count (64 in the paper); every other layer scales with it, so
tests and CPU presets run the same architecture at width 4 or 8.
"""

import keras

from great_tf.models.blocks import basic_block, conv_bn_act, scaled

RESNET18_BLOCKS = (2, 2, 2, 2)


def resnet18_encoder(input_shape, width=64, act="relu", name="resnet18_encoder"):
    """ResNet-18 without pooling and linear layers: (H, W, C) -> (H/8, W/8, 8*width)."""
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, width, 3, 1, act, name="stem")
    for stage, (blocks, multiplier, strides) in enumerate(
        zip(RESNET18_BLOCKS, (1, 2, 4, 8), (1, 2, 2, 2)), start=1
    ):
        for b in range(blocks):
            x = basic_block(
                x, width * multiplier, strides if b == 0 else 1, act, name=f"stage{stage}_{b}"
            )
    return keras.Model(inputs, x, name=name)


def resnet18(input_shape, num_classes, width=64, act="relu", name="resnet18"):
    """The CIFAR ResNet-18 classifier: encoder, global average pooling, linear logits."""
    encoder = resnet18_encoder(input_shape, width, act, name=f"{name}_encoder")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(encoder.output)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(encoder.input, logits, name=name)


def resnet11(input_shape, num_outputs, widths=(256, 128, 64, 32), strides=(1, 1, 1, 1),
             act="leaky_relu", name="resnet11"):
    """The paper's ResNet-11 auxiliary classifier.

    An input 3x3 convolution to `widths[0]` channels, one basic block per entry of `widths`
    (the paper: "256 input channels, decreased by a factor of 2 over 4 ResNet modules"),
    global average pooling and a linear layer. The paper's multi-task encoder ends with 512
    channels while it gives this classifier 256: the input convolution is where we reconcile the
    two (documented in README, "Reading the paper").
    """
    inputs = keras.Input(input_shape, name="gradient")
    x = conv_bn_act(inputs, widths[0], 3, 1, act, name="stem")
    for i, (filters, s) in enumerate(zip(widths, strides)):
        x = basic_block(x, filters, s, act, name=f"block{i}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_outputs, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def task_classifier(feature_shape, num_tasks, width=64, name="task_classifier"):
    """ResNet-11 with LeakyReLU(0.2) over gradient tensors at the shared feature (Alg. 3)."""
    widths = tuple(scaled(c, width) for c in (256, 128, 64, 32))
    return resnet11(feature_shape, num_tasks, widths, act="leaky_relu", name=name)
