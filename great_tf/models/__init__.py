"""Networks used by the GREAT experiments; all normalization is exact under double backprop."""

from great_tf.models.blocks import ACTIVATIONS, basic_block, batch_norm
from great_tf.models.decoders import classification_decoder, dense_decoder
from great_tf.models.resnet import resnet11, resnet18, resnet18_encoder, task_classifier

__all__ = [
    "ACTIVATIONS",
    "basic_block",
    "batch_norm",
    "classification_decoder",
    "dense_decoder",
    "resnet11",
    "resnet18",
    "resnet18_encoder",
    "task_classifier",
]
