"""Speed measurements of the GREAT train steps: `python -m bench.mtl`, `bench.defense`, ..."""

from great_tf.startup import quiet_tensorflow_startup

# Before any benchmark imports TensorFlow (TF_CPP_MIN_LOG_LEVEL=0 brings its start-up lines back).
quiet_tensorflow_startup()
