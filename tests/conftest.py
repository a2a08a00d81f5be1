import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tensorflow_datasets")
if "TFDS_DATA_DIR" not in os.environ and os.path.isdir(_SHARED):
    os.environ["TFDS_DATA_DIR"] = os.path.abspath(_SHARED)

import keras  # noqa: E402
import pytest  # noqa: E402

from great_tf.distribute import configure_cpu_replicas  # noqa: E402

# Two logical CPU devices for the whole session, so tests/test_distributed.py can run
# MirroredStrategy for real; they must exist before TensorFlow initialises. Every other test still
# runs on the default strategy (/cpu:0).
configure_cpu_replicas(2)


@pytest.fixture
def float64():
    """Builds models in float64 for finite-difference checks, then restores the default."""
    # Keras caches a global dtype policy once any layer exists; floatx alone would not reach it.
    previous_floatx, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(previous_floatx)
    keras.config.set_dtype_policy(previous_policy)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GREAT_TF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def mirrored():
    """One two-replica strategy for the session: a second one over the same devices would restart
    the collective instance keys and collide with the first one's."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
