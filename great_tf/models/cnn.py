"""The supplement's CNN-5 student and its binary gradient discriminator (CNN-5 + ResNet-18 pair).

CNN-5, exactly as the supplement specifies: three 3x3 convolutions with padding 1 ("same"),
32, 64 and 128 channels, strides 1, 2, 2; then two linear layers, the penultimate with 128 units.
Every layer but the last is followed by BatchNormalization and ReLU. The supplement names no
pooling, so the last feature map is flattened (8x8x128 on 32x32 inputs). Layers followed by BN
carry no bias (BN's offset plays its role). The discriminator is the same network with
LeakyReLU(0.2) and one output logit (teacher = 1, student = 0).

`width` is the first convolution's channel count (32 in the paper); the others follow it
(x2, x4), so tests run the same architecture at width 2.
"""

import keras

from great_tf.models.blocks import activation, batch_norm, conv_bn_act

CNN5_STRIDES = (1, 2, 2)


def cnn5(input_shape, num_outputs=10, width=32, hidden=128, act="relu", name="cnn5",
         input_name="image"):
    """CNN-5: (H, W, C) -> `num_outputs` logits."""
    inputs = keras.Input(input_shape, name=input_name)
    x = inputs
    for i, strides in enumerate(CNN5_STRIDES):
        x = conv_bn_act(x, width * 2**i, 3, strides, act, name=f"conv{i + 1}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden, use_bias=False, name="fc1")(x)
    x = batch_norm(name="fc1_bn")(x)
    x = activation(act, name=f"fc1_{act}")(x)
    outputs = keras.layers.Dense(num_outputs, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def cnn5_discriminator(input_shape, width=32, hidden=128, name="cnn5_discriminator"):
    """The CNN-5 pair's binary classifier of input gradients: CNN-5 with LeakyReLU(0.2), 1 logit."""
    return cnn5(input_shape, 1, width, hidden, act="leaky_relu", name=name, input_name="gradient")
