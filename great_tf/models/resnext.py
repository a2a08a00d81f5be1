"""ResNeXt-29 (8x64d) for CIFAR, the teacher of the supplement's ResNet-18 + ResNeXt-29-8 pair.

Xie et al. (2017), CIFAR variant: a 3x3 stem with 64 channels, three stages of three bottleneck
blocks (3 x 3 x 3 + 2 = 29 layers), cardinality 8 and bottleneck width 64 per group at the first
stage (doubling per stage), so the grouped 3x3 convolutions have 512, 1024, 2048 channels and the
stages output 256, 512, 1024; strides 1, 2, 2; global average pooling and a linear layer. About
34.4M parameters at the paper's width, as in the ResNeXt paper.

`width` is the stem's channel count (64 in the paper); every layer scales with it.
"""

import keras

from great_tf.models.blocks import activation, batch_norm, conv, conv_bn_act, residual_output, scaled

RESNEXT29_BLOCKS = 3


def resnext_block(x, group_width, cardinality, out_channels, strides=1, act="relu", name="block"):
    """1x1 reduce to cardinality*group_width, grouped 3x3 (carrying the stride), 1x1 expand."""
    inner = cardinality * group_width
    y = conv_bn_act(x, inner, 1, 1, act, name=f"{name}_reduce")
    y = keras.layers.Conv2D(inner, 3, strides=strides, padding="same", groups=cardinality,
                            use_bias=False, name=f"{name}_group_conv")(y)
    y = batch_norm(name=f"{name}_group_bn")(y)
    y = activation(act, name=f"{name}_group_{act}")(y)
    y = conv(out_channels, 1, name=f"{name}_expand_conv")(y)
    y = batch_norm(name=f"{name}_expand_bn")(y)
    return residual_output(x, y, strides, act, name)


def resnext29(input_shape, num_classes=10, width=64, cardinality=8, base_group_width=64,
              act="relu", name="resnext29"):
    """ResNeXt-29 (cardinality x base_group_width d), 8x64d by default."""
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_act(inputs, width, 3, 1, act, name="stem")
    for stage, strides in enumerate((1, 2, 2)):
        group_width = scaled(base_group_width * 2**stage, width)
        out_channels = 4 * scaled(64 * 2**stage, width)
        for b in range(RESNEXT29_BLOCKS):
            x = resnext_block(x, group_width, cardinality, out_channels, strides if b == 0 else 1,
                              act, name=f"stage{stage + 1}_{b}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)
