"""Runnable experiments: `python -m trainers.mtl`, and one module per GREAT use."""

from great_tf.startup import quiet_tensorflow_startup

# Before any trainer imports TensorFlow: its start-up lines are not news (TF_CPP_MIN_LOG_LEVEL=0
# brings them back).
quiet_tensorflow_startup()
