"""Loading `.keras` files that hold great_tf's layers or whole wrappers, in a fresh process.

A saved model names its classes (`great_tf>ExactBatchNorm`, `great_tf>GAL`, `great_tf>GreatMTL`,
...); Keras finds them only once the modules that register them have been imported, which a fresh
process evaluating, distilling from or resuming a saved model has not done. A wrapper
(`GreatDefense`, a distiller, a multi-task model) saves with `model.save("x.keras")` and reloads
with `load_model("x.keras", compile=True)`, its optimizers and their state included.
"""

import importlib

import keras

# Every module with a `keras.saving.register_keras_serializable` class (tests/test_saving.py checks).
REGISTERING_MODULES = ("great_tf.core", "great_tf.layers", "great_tf.models.normalization",
                       "great_tf.mtl.base", "great_tf.mtl.dense_metrics", "great_tf.mtl.methods.dbmtl",
                       "great_tf.mtl.tasks", "great_tf.precision", "great_tf.schedules")
# The packages that define every `GreatModel` subclass (each registers itself, great_tf/core.py).
WRAPPER_MODULES = ("great_tf.defense", "great_tf.distill.objectives", "great_tf.mtl.methods")


def register_custom_objects():
    for name in REGISTERING_MODULES + WRAPPER_MODULES:
        importlib.import_module(name)


def load_model(path, compile=False):
    """`keras.saving.load_model` with great_tf's classes registered first; a missing, broken or
    foreign file ends in one `GreatError` that names it."""
    import os
    import zipfile

    from great_tf.errors import GreatError

    register_custom_objects()
    if not os.path.isfile(path):
        raise GreatError(f"no saved model at {path}: pass a .keras file written by model.save()")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise GreatError(f"{path} is not a loadable .keras model ({type(err).__name__}: {reason}); "
                         f"pass a file written by model.save(), or retrain") from None


def check_input_shape(model, input_shape, path, data):
    """A one-line `GreatError` if `model` (loaded from `path`) does not take images of
    `input_shape` (those of the data set `data`), instead of a graph error at its first call."""
    from great_tf.errors import GreatError

    try:
        expected = tuple(model.input_shape[1:])
    except (AttributeError, ValueError, TypeError):  # a model without a fixed input: nothing to check
        return
    if len(expected) != len(input_shape) or any(e is not None and e != int(g)
                                                for e, g in zip(expected, input_shape)):
        raise GreatError(f"the model {path} takes inputs of shape {expected}, but {data} has images "
                         f"of shape {tuple(int(g) for g in input_shape)}: pass the data set the "
                         f"model was trained on")
