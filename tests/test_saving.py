"""Saved models load in a fresh process through great_tf.saving.load_model."""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np

from great_tf.layers import GAL
from great_tf.models import resnet18
from great_tf.saving import REGISTERING_MODULES

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "great_tf"


def test_every_module_that_registers_a_keras_class_is_listed():
    registering = set()
    for path in PACKAGE.rglob("*.py"):
        if "register_keras_serializable" in path.read_text(encoding="utf-8") and path.name != "saving.py":
            module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
            registering.add(re.sub(r"\.__init__$", "", module))
    assert registering == set(REGISTERING_MODULES)


def test_a_model_with_great_tf_layers_loads_in_a_fresh_process(tmp_path):
    keras.utils.set_random_seed(0)
    network = resnet18((8, 8, 3), 3, width=4)  # ExactBatchNorm throughout
    features = network.get_layer("stage4_1_out_relu").output
    model = keras.Model(network.input, [network.output, GAL(name="gal")(features)])
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", model(x)[0].numpy())
    script = (
        "import numpy as np, sys\n"
        "from great_tf.saving import load_model\n"
        "model = load_model(sys.argv[1])\n"
        "x, expected = np.load(sys.argv[2]), np.load(sys.argv[3])\n"
        "np.testing.assert_allclose(model(x)[0].numpy(), expected, rtol=1e-5, atol=1e-6)\n"
        "print('loaded', type(model.get_layer('gal')).__name__, type(model.get_layer('stem_bn')).__name__)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"),
                             str(tmp_path / "expected.npy")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded GAL ExactBatchNorm" in result.stdout
