"""The distillation architectures of the supplement, checked layer by layer and by size."""

import keras
import numpy as np
import pytest

from great_tf import models


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_cnn5_is_exactly_the_supplements_network():
    model = models.cnn5((32, 32, 3), 10)
    convs = layers_of(model, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [32, 64, 128]
    assert [c.strides for c in convs] == [(1, 1), (2, 2), (2, 2)]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    dense = layers_of(model, keras.layers.Dense)
    assert [d.units for d in dense] == [128, 10]
    # BN + ReLU after every layer but the last, all BN synchronized (exact second order).
    bns = layers_of(model, keras.layers.BatchNormalization)
    assert len(bns) == 4 and all(bn.synchronized for bn in bns)
    assert len(layers_of(model, keras.layers.ReLU)) == 4
    assert model.layers[-1] is dense[-1]
    # 3*3*3*32 + 3*3*32*64 + 3*3*64*128 + 8*8*128*128 + 128*10 + 10, plus BN scales and offsets.
    weights = 864 + 18432 + 73728 + 1048576 + 1290 + 2 * (32 + 64 + 128 + 128)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == weights
    assert model.output_shape == (None, 10)


def test_cnn5_discriminator_is_cnn5_with_leaky_relu_and_one_logit():
    disc = models.cnn5_discriminator((32, 32, 3))
    leaky = layers_of(disc, keras.layers.LeakyReLU)
    assert len(leaky) == 4 and all(np.isclose(l.negative_slope, 0.2) for l in leaky)
    assert not layers_of(disc, keras.layers.ReLU)
    assert disc.output_shape == (None, 1)


def test_resnext29_8x64d_has_the_published_size_and_cardinality():
    model = models.resnext29((32, 32, 3), 10)
    grouped = [c for c in layers_of(model, keras.layers.Conv2D) if c.groups > 1]
    assert len(grouped) == 9 and all(c.groups == 8 for c in grouped)
    assert [c.filters for c in grouped[::3]] == [512, 1024, 2048]
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert abs(params - 34.43e6) < 0.01e6  # 34.4M in Xie et al. (2017)
    assert model.output_shape == (None, 10)


def test_resnet50_imagenet_matches_the_reference_parameter_count():
    model = models.resnet50((224, 224, 3), 1000, stem="imagenet")
    # torchvision's resnet50 has 25,557,032 parameters.
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 25_557_032


@pytest.mark.parametrize("depth,convs", [(50, 1 + 16 * 3 + 4), (152, 1 + 50 * 3 + 4)])
def test_bottleneck_resnets_with_a_stride2_stem_for_64x64(depth, convs):
    model = models.resnet((64, 64, 3), 200, depth, width=4, stem="stride2")
    conv_layers = layers_of(model, keras.layers.Conv2D)
    assert len(conv_layers) == convs
    assert conv_layers[0].strides == (2, 2)
    # stride 2 stem then three stride-2 stages: 64 -> 4 before pooling.
    pool = model.get_layer("pool")
    assert pool.input.shape[1:3] == (4, 4) and pool.input.shape[-1] == 4 * 4 * 8
    assert model.output_shape == (None, 200)


def test_resnet11_discriminator_layout():
    disc = models.resnet11_discriminator((64, 64, 3), width=4, stem_strides=2)
    convs = layers_of(disc, keras.layers.Conv2D)
    # 1 convolution + 4 modules of 2 convolutions (+ 3 projections), one logit.
    assert len([c for c in convs if "proj" not in c.name]) == 9
    assert convs[0].strides == (2, 2)
    assert layers_of(disc, keras.layers.LeakyReLU) and not layers_of(disc, keras.layers.ReLU)
    assert disc.output_shape == (None, 1)
