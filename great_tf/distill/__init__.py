"""Knowledge distillation with GREAT (Algorithm 2) and the paper's baselines, on one student.

Every objective is one file in `great_tf/distill/objectives/` with a `Distiller` subclass that
sets `method` (docs/design.md#distillation): "baseline" (cross-entropy), "distill" (Hinton),
"sobolev", "great". Like `keras.distillation.Distiller`, a distiller takes the (frozen) teacher and
the student, in that order (`HintonDistiller(teacher, student)`, keywords too), `call` is the student
and `compile(optimizer=...)` trains it; unlike Keras', the objective sees the inputs `x`, which
gradient matching (Sobolev, GREAT) needs.
"""

from great_tf.distill.base import (DEFAULT_ALPHA, DEFAULT_TEMPERATURE, Distiller, available_methods,
                                   build_distiller, compile_distiller, method_class)
from great_tf.distill.losses import (discriminator_losses, hinton_kl, hinton_loss,
                                     sobolev_distance)
from great_tf.distill.objectives.baseline import CrossEntropyStudent
from great_tf.distill.objectives.great import GreatDistiller
from great_tf.distill.objectives.hinton import HintonDistiller
from great_tf.distill.objectives.sobolev import SobolevStudent
from great_tf.distill.teacher import load_teacher
from great_tf.errors import GreatError
from great_tf.losses import sparse_ce as cross_entropy

METHOD_NAMES = {"baseline": "Baseline", "distill": "Distillation", "sobolev": "Sobolev",
                "great": "GREAT"}


def __getattr__(name):
    if name == "METHODS":
        return available_methods()
    raise AttributeError(f"module 'great_tf.distill' has no attribute {name!r}")


__all__ = ["CrossEntropyStudent", "DEFAULT_ALPHA", "DEFAULT_TEMPERATURE", "Distiller",
           "GreatDistiller", "GreatError", "HintonDistiller", "METHOD_NAMES", "SobolevStudent",
           "available_methods", "build_distiller", "compile_distiller", "cross_entropy",
           "discriminator_losses", "hinton_kl", "hinton_loss", "load_teacher", "method_class",
           "sobolev_distance"]
