"""Hyperparameter sweeps with keras-tuner: `python -m tuning.distill`."""

from great_tf.startup import quiet_tensorflow_startup

# Before any sweep imports TensorFlow (TF_CPP_MIN_LOG_LEVEL=0 brings its start-up lines back).
quiet_tensorflow_startup()
