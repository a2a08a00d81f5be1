"""Loading a saved teacher, frozen, with one-line errors."""

import os

from great_tf.errors import GreatError
from great_tf.saving import load_model


def load_teacher(path, num_classes=None, input_shape=None):
    """A teacher saved with `model.save(path)` (a .keras file), frozen; one-line errors."""
    if not path:
        raise GreatError("no teacher given: pass --teacher PATH (train one with --train-teacher)")
    if not os.path.exists(path):
        raise GreatError(f"teacher {path} does not exist: train one with "
                         f"`python -m trainers.distill --train-teacher resnet18` or fix the path")
    try:
        teacher = load_model(path)
    except Exception as err:  # noqa: BLE001 - any load failure is the user's file
        raise GreatError(f"cannot load the teacher {path}: {type(err).__name__}: {err}") from None
    if num_classes is not None and teacher.output_shape[-1] != num_classes:
        raise GreatError(f"teacher {path} has {teacher.output_shape[-1]} outputs, the data set "
                         f"{num_classes} classes")
    if input_shape is not None and tuple(teacher.input_shape[1:]) != tuple(input_shape):
        raise GreatError(f"teacher {path} takes inputs of shape {teacher.input_shape[1:]}, the "
                         f"data set has {tuple(input_shape)}")
    teacher.trainable = False
    return teacher
