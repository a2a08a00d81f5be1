"""Loading `.keras` files that hold great_tf's layers, in a fresh process.

A saved model names its classes (`great_tf>ExactBatchNorm`, `great_tf>GAL`, ...); Keras finds them
only once the modules that register them have been imported, which a fresh process evaluating or
distilling from a saved model has not done.
"""

import importlib

import keras

# Every module with a `keras.saving.register_keras_serializable` class (tests/test_saving.py checks).
REGISTERING_MODULES = ("great_tf.layers", "great_tf.models.normalization", "great_tf.mtl",
                       "great_tf.precision", "great_tf.schedules")


def register_custom_objects():
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


def load_model(path, compile=False):
    """`keras.saving.load_model` with great_tf's classes registered first."""
    register_custom_objects()
    return keras.saving.load_model(path, compile=compile)
