"""CIFAR-style ResNets: 3x3 stem, no max-pool, four stages (He et al. 2016, as used by the paper).

`width` is the first stage's channel count (64 in the paper); every other layer scales with it, so
tests and CPU presets run the same architecture at width 4 or 8.
"""

import keras

from great_tf.models.blocks import basic_block, batch_norm, conv, conv_bn_act, residual_output, scaled

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
    """The classifier of gradient tensors at the shared feature (Alg. 3), by the feature's rank:
    over a feature map (H, W, C), the paper's ResNet-11 with LeakyReLU(0.2), its widths scaled
    by `width`; over a vector (D,), an MLP with two hidden layers of max(D, 8) units and
    LeakyReLU(0.2) (our choice: the paper's features are all maps). Any other feature needs a
    classifier of your own."""
    from great_tf.errors import GreatError

    feature_shape = tuple(feature_shape)
    if len(feature_shape) == 3:
        widths = tuple(scaled(c, width) for c in (256, 128, 64, 32))
        return resnet11(feature_shape, num_tasks, widths, act="leaky_relu", name=name)
    if len(feature_shape) == 1:
        inputs = keras.Input(feature_shape, name="gradient")
        x = inputs
        for i in range(2):
            x = keras.layers.Dense(max(feature_shape[0], 8), name=f"hidden{i}")(x)
            x = keras.layers.LeakyReLU(0.2, name=f"hidden{i}_act")(x)
        return keras.Model(inputs, keras.layers.Dense(num_tasks, name="logits")(x), name=name)
    raise GreatError(f"no default task classifier for a shared feature of shape {feature_shape} "
                     f"(a map (H, W, C) or a vector (D,) have one): pass classifier=...")


# -- Deeper ResNets and other input sizes (knowledge distillation, Table 3) -------------------------

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                 152: (3, 8, 36, 3)}
STEMS = ("cifar", "stride2", "imagenet")


def bottleneck_block(x, planes, strides=1, act="relu", name="block"):
    """The ResNet bottleneck: 1x1 to `planes`, 3x3 carrying the stride, 1x1 to 4*planes."""
    y = conv_bn_act(x, planes, 1, 1, act, name=f"{name}_a")
    y = conv_bn_act(y, planes, 3, strides, act, name=f"{name}_b")
    y = conv(4 * planes, 1, name=f"{name}_c_conv")(y)
    y = batch_norm(name=f"{name}_c_bn")(y)
    return residual_output(x, y, strides, act, name)


def resnet_stem(inputs, width, stem, act):
    """'cifar': 3x3 stride 1 (32x32); 'stride2': 3x3 stride 2, the supplement's stem for 64x64
    mini-ImageNet; 'imagenet': 7x7 stride 2 and a 3x3 stride-2 max-pool (224x224)."""
    if stem == "cifar":
        return conv_bn_act(inputs, width, 3, 1, act, name="stem")
    if stem == "stride2":
        return conv_bn_act(inputs, width, 3, 2, act, name="stem")
    if stem == "imagenet":
        x = conv_bn_act(inputs, width, 7, 2, act, name="stem")
        return keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    raise ValueError(f"unknown stem {stem!r}: use one of {STEMS}")


def resnet(input_shape, num_classes, depth=18, width=64, stem="cifar", act="relu", name=None):
    """ResNet-`depth` (18, 34: basic blocks; 50, 101, 152: bottlenecks) with the chosen stem."""
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"unknown ResNet depth {depth}: use one of {sorted(RESNET_BLOCKS)}")
    block = basic_block if depth < 50 else bottleneck_block
    inputs = keras.Input(input_shape, name="image")
    x = resnet_stem(inputs, width, stem, act)
    for stage, (blocks, multiplier, strides) in enumerate(
        zip(RESNET_BLOCKS[depth], (1, 2, 4, 8), (1, 2, 2, 2)), start=1
    ):
        for b in range(blocks):
            x = block(x, width * multiplier, strides if b == 0 else 1, act, name=f"stage{stage}_{b}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name or f"resnet{depth}")


def resnet50(input_shape, num_classes, width=64, stem="cifar", act="relu", name="resnet50"):
    return resnet(input_shape, num_classes, 50, width, stem, act, name)


def resnet152(input_shape, num_classes, width=64, stem="cifar", act="relu", name="resnet152"):
    return resnet(input_shape, num_classes, 152, width, stem, act, name)


def resnet11_discriminator(input_shape, width=64, stem_strides=1, name="resnet11_discriminator"):
    """The distillation pairs' binary classifier of input gradients ("a ResNet-18 like ResNet-11"):
    a 3x3 convolution (stride 2 for 64x64 inputs), four basic blocks of two convolutions at
    width, 2, 4, 8 x width with strides 1, 2, 2, 2, average pooling, one logit; LeakyReLU(0.2)."""
    inputs = keras.Input(input_shape, name="gradient")
    x = conv_bn_act(inputs, width, 3, stem_strides, "leaky_relu", name="stem")
    for i, (multiplier, strides) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2))):
        x = basic_block(x, width * multiplier, strides, "leaky_relu", name=f"block{i}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


# -- TensorFlow 2.21 oneDNN guard ------------------------------------------------------------------

# Measured on TF 2.21 CPU with oneDNN: training a network with a 1x1 convolution of stride 2 whose
# input has 3, 4, 8 or 12 channels on an odd batch (1, 3, 5, 7, 9) kills the process (segmentation
# fault or abort in the convolution's filter gradient, also when eager code asks only for an input
# gradient); 16 input channels or more, stride 1, 3x3 kernels, or even batches do not. Every
# ResNet's projection shortcut is such a convolution (stage 2 reads `width` channels), so a ResNet
# narrower than 16 is exposed, and so are the ResNet-11 auxiliary networks and discriminators.
ONEDNN_SAFE_CHANNELS = 16


def onednn_crash_layers(model):
    """The strided 1x1 convolutions of `model` (and of every network inside it: student, teacher,
    auxiliary classifier, discriminator) whose input is narrower than ONEDNN_SAFE_CHANNELS."""
    found = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not isinstance(layer, keras.layers.Conv2D) or getattr(layer, "kernel", None) is None:
            continue
        if tuple(layer.kernel_size) == (1, 1) and max(layer.strides) > 1 \
                and layer.kernel.shape[-2] < ONEDNN_SAFE_CHANNELS:
            found.append(layer)
    return found


def check_onednn_batch(model, batch_size, replicas=1):
    """Refuses, in one line, a per-replica batch that would crash TensorFlow 2.21's oneDNN kernels
    in `model` (see ONEDNN_SAFE_CHANNELS); call it before training, when the batch size is known.

    An uneven split over `replicas` gives some replicas one example more: both sizes are checked.
    TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off (1.8x slower steps) and this check with it.
    """
    import os

    from great_tf.errors import GreatError

    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") == "0":
        return
    odd = sorted(n for n in {batch_size // replicas, -(-batch_size // replicas)} if n % 2)
    if not odd:
        return
    layers = onednn_crash_layers(model)
    if layers:
        layer = min(layers, key=lambda l: l.kernel.shape[-2])  # the narrowest
        raise GreatError(
            f"an odd batch per replica ({odd[0]}) crashes TensorFlow's oneDNN convolution gradient in "
            f"this model's strided 1x1 convolution {layer.name!r} ({layer.kernel.shape[-2]} input "
            f"channels; ResNets narrower than {ONEDNN_SAFE_CHANNELS}): use an even --batch-size, "
            f"wider networks, or set TF_ENABLE_ONEDNN_OPTS=0")
