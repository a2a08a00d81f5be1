"""Networks used by the GREAT experiments; all normalization is exact under double backprop."""

from great_tf.models.blocks import ACTIVATIONS, basic_block, batch_norm
from great_tf.models.normalization import ExactBatchNorm
from great_tf.models.decoders import classification_decoder, dense_decoder
from great_tf.models.resnet import resnet11, resnet18, resnet18_encoder, task_classifier

__all__ = [
    "ACTIVATIONS",
    "basic_block",
    "batch_norm",
    "classification_decoder",
    "dense_decoder",
    "ExactBatchNorm",
    "resnet11",
    "resnet18",
    "resnet18_encoder",
    "task_classifier",
]

# Knowledge distillation (Table 3): CNN-5 and its discriminator, ResNeXt-29, deeper ResNets.
from great_tf.models.cnn import cnn5, cnn5_discriminator  # noqa: E402
from great_tf.models.resnet import (  # noqa: E402
    bottleneck_block, resnet, resnet11_discriminator, resnet50, resnet152)
from great_tf.models.resnext import resnext29  # noqa: E402

__all__ += ["bottleneck_block", "cnn5", "cnn5_discriminator", "resnet", "resnet11_discriminator",
            "resnet50", "resnet152", "resnext29"]
