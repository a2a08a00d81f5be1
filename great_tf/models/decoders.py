"""Task decoders for the multi-task network (paper supplement, CIFAR-10 multi-task set-up)."""

import keras

from great_tf.models.blocks import basic_block, scaled


def classification_decoder(feature_shape, num_classes, name="classification"):
    """Global average pooling and a linear layer: the pieces ResNet-18 loses in the encoder."""
    inputs = keras.Input(feature_shape, name="feature")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name=name)


def dense_decoder(feature_shape, out_channels, width=64, name="dense"):
    """Three x2 upsampling stages, each followed by a ResNet block, then a 1x1 linear projection.

    The output is linear (no sigmoid): the paper trains these tasks with plain MSE and says nothing
    of an output activation.
    """
    inputs = keras.Input(feature_shape, name="feature")
    x = inputs
    for i, channels in enumerate((256, 128, 64)):
        x = keras.layers.UpSampling2D(2, name=f"up{i}")(x)
        x = basic_block(x, scaled(channels, width), 1, "relu", name=f"up{i}_block")
    outputs = keras.layers.Conv2D(out_channels, 1, name="out")(x)
    return keras.Model(inputs, outputs, name=name)
