"""The NYUv2 multi-task network: a dilated residual encoder and light per-task decoders.

The paper's supplement: "a dilated residual network with 43 layers, of which 2 intermediate
layers have a dilation rate of 2 and 1 has a dilation rate of 4. The input is downsampled 8
times ... 512 output channels", and decoders of "a single upsampling of stride 2 and 3
convolution layers". The 43-layer network is not specified further, so we build the dilated
ResNet-18 of the DRN papers (DRN-A-18, Yu, Koltun and Funkhouser 2017): the ImageNet stem
(7x7 stride 2 and a stride-2 max-pool), stage 1 (64 channels), stage 2 (128, stride 2) and the
last two stages without stride, dilated 2 (256) and 4 (512). Output stride 8, 512 channels at
width 64: a 320x320 input gives a 40x40x512 feature, and the decoders' x2 upsampling gives the
paper's 80x80 outputs. Docs: docs/design.md#nyuv2.

Decoder: bilinear x2 upsampling, 3x3 convolution + BatchNorm + ReLU (128 channels at width 64),
another (64), and a linear 1x1 convolution to the task's channels (the paper does not give the
decoder widths; these keep the three decoders cheaper than the encoder). Every layer scales with
`width` (64 in the paper), every BatchNorm is `ExactBatchNorm` (great_tf.models.blocks).
"""

import keras

from great_tf.models.blocks import activation, batch_norm, residual_output, scaled

DRN_STAGES = (  # (channels at width 64, blocks, stride, dilation)
    (64, 2, 1, 1),
    (128, 2, 2, 1),
    (256, 2, 1, 2),
    (512, 2, 1, 4),
)
DECODER_CHANNELS = (128, 64)


def dilated_conv(filters, kernel_size, strides=1, dilation=1, name=None):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation,
                               padding="same", use_bias=False, name=name)


def dilated_block(x, filters, strides=1, dilation=1, act="relu", name="block"):
    """The ResNet basic block with both 3x3 convolutions dilated by `dilation` (DRN-A)."""
    y = dilated_conv(filters, 3, strides, dilation, name=f"{name}_a_conv")(x)
    y = batch_norm(name=f"{name}_a_bn")(y)
    y = activation(act, name=f"{name}_a_{act}")(y)
    y = dilated_conv(filters, 3, 1, dilation, name=f"{name}_b_conv")(y)
    y = batch_norm(name=f"{name}_b_bn")(y)
    return residual_output(x, y, strides, act, name)


def drn_encoder(input_shape, width=64, act="relu", name="drn_encoder"):
    """Dilated ResNet-18 (DRN-A-18): (H, W, C) -> (H/8, W/8, 8*width), H and W multiples of 8."""
    inputs = keras.Input(input_shape, name="image")
    x = dilated_conv(scaled(64, width), 7, 2, name="stem_conv")(inputs)
    x = batch_norm(name="stem_bn")(x)
    x = activation(act, name=f"stem_{act}")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, (channels, blocks, strides, dilation) in enumerate(DRN_STAGES, start=1):
        for b in range(blocks):
            x = dilated_block(x, scaled(channels, width), strides if b == 0 else 1, dilation, act,
                              name=f"stage{stage}_{b}")
    return keras.Model(inputs, x, name=name)


def upsampling_decoder(feature_shape, out_channels, width=64, name="decoder"):
    """x2 bilinear upsampling and three convolutions; the output is linear."""
    inputs = keras.Input(feature_shape, name="feature")
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up")(inputs)
    for i, channels in enumerate(DECODER_CHANNELS):
        x = dilated_conv(scaled(channels, width), 3, name=f"conv{i}")(x)
        x = batch_norm(name=f"conv{i}_bn")(x)
        x = activation("relu", name=f"conv{i}_relu")(x)
    outputs = keras.layers.Conv2D(out_channels, 1, name="out")(x)
    return keras.Model(inputs, outputs, name=name)


def drn_multitask_network(input_shape, tasks, width=64):
    """The NYUv2 network for `tasks`: (encoder, {task name: decoder}), one decoder per task with
    `task.units` output channels, so a new dense task needs no change here."""
    encoder = drn_encoder(input_shape, width, name="encoder")
    feature_shape = tuple(encoder.output.shape[1:])
    decoders = {t.name: upsampling_decoder(feature_shape, t.units, width, name=f"{t.name}_decoder")
                for t in tasks}
    return encoder, decoders
