"""The NYUv2 network (great_tf/models/drn.py): output stride 8, 512 channels, dilations, decoders."""

import keras
import numpy as np
import pytest

from great_tf.models import ExactBatchNorm
from great_tf.models.drn import drn_encoder, drn_multitask_network
from great_tf.mtl.nyuv2_tasks import NYUV2_TASKS


def test_the_paper_sizes_stride_8_and_512_channels_then_80x80_outputs():
    encoder, decoders = drn_multitask_network((320, 320, 3), NYUV2_TASKS, width=64)
    assert tuple(encoder.output.shape[1:]) == (40, 40, 512)
    assert tuple(decoders["depth"].output.shape[1:]) == (80, 80, 1)
    assert tuple(decoders["normals"].output.shape[1:]) == (80, 80, 3)
    # The dilated ResNet-18 keeps ResNet-18's parameters (11.2 M in its convolutions and norms).
    assert 11.1e6 < encoder.count_params() < 11.3e6


def test_stages_3_and_4_are_dilated_2_and_4_without_stride():
    encoder = drn_encoder((64, 64, 3), width=8)
    convs = {layer.name: layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)}
    for stage, dilation in ((1, 1), (2, 1), (3, 2), (4, 4)):
        for name in (f"stage{stage}_0_a_conv", f"stage{stage}_1_b_conv"):
            assert convs[name].dilation_rate == (dilation, dilation)
    assert convs["stage2_0_a_conv"].strides == (2, 2)
    assert convs["stage3_0_a_conv"].strides == convs["stage4_0_a_conv"].strides == (1, 1)
    assert convs["stem_conv"].strides == (2, 2) and convs["stem_conv"].kernel_size == (7, 7)
    norms = [layer for layer in encoder.layers if "bn" in layer.name]
    assert len(norms) == 1 + 8 * 2 + 3 and all(isinstance(n, ExactBatchNorm) for n in norms)


@pytest.mark.parametrize("width", [2, 8])
def test_width_scales_every_stage_and_a_forward_pass_runs(width):
    encoder, decoders = drn_multitask_network((32, 32, 3), NYUV2_TASKS, width=width)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    feature = encoder(x, training=False)
    assert feature.shape == (2, 4, 4, 8 * width)
    for task in NYUV2_TASKS:
        out = decoders[task.name](feature, training=False)
        assert out.shape == (2, 8, 8, task.units) and np.isfinite(out).all()


def test_a_decoder_per_task_from_the_task_list():
    from great_tf.mtl import Task

    tasks = NYUV2_TASKS + (Task("keypoints", "regression", 48),)
    _, decoders = drn_multitask_network((32, 32, 3), tasks, width=2)
    assert tuple(decoders["keypoints"].output.shape[1:]) == (8, 8, 48)


def test_the_encoder_survives_keras_save_and_load(tmp_path):
    encoder = drn_encoder((32, 32, 3), width=2)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype(np.float32)
    path = str(tmp_path / "drn.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x, training=False), encoder(x, training=False), atol=1e-6)
