"""great_tf.diagnostics: the BatchNorm-statistics gap and the logit scale, on a network whose
moving statistics are right and on the same network with them broken."""

import keras
import numpy as np

from great_tf.diagnostics import check_model


def network():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization(momentum=0.0)(keras.layers.Dense(8)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(h)))


def test_gap_is_zero_with_matching_statistics_and_large_with_broken_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    model = network()
    y = np.asarray(model(x, training=True)).argmax(1)  # labels the batch-statistics model gets right
    model(x, training=True)  # momentum 0: the moving statistics become those of the whole set
    good = check_model(model, x, y, batch_size=512)
    assert good.batch_stats_accuracy == 100.0
    assert abs(good.inference_accuracy - 100.0) < 1e-9
    bn = model.layers[2]
    bn.moving_mean.assign(bn.moving_mean + 5.0)
    broken_mean = bn.moving_mean.numpy().copy()
    bad = check_model(model, x, y, batch_size=512)
    assert bad.batch_stats_accuracy == 100.0 and bad.inference_accuracy < 80.0
    assert "do not describe" in bad.lines()[0]
    np.testing.assert_array_equal(bn.moving_mean.numpy(), broken_mean)  # put back after the check


def test_logit_scale_and_spread():
    model = network()
    x = np.random.default_rng(1).normal(size=(64, 4)).astype("float32")
    logits = np.asarray(model(x, training=False))
    result = check_model(model, x, np.zeros(64, int))
    np.testing.assert_allclose(result.mean_largest_logit, np.abs(logits).max(1).mean(), rtol=1e-6)
    np.testing.assert_allclose(result.mean_logit_spread, logits.std(1).mean(), rtol=1e-6)


# -- the command line --------------------------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from great_tf import diagnostics  # noqa: E402
from great_tf.errors import GreatError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_one_is_refused_in_one_line(limit, capsys):
    with pytest.raises(SystemExit) as exit_:
        diagnostics.main(["model.keras", "--dataset", "mnist", "--limit", limit])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert f"argument --limit: must be at least 1, got {limit}" in err


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.environ.get("TFDS_DATA_DIR", ""), "mnist")),
                    reason="needs MNIST in TFDS_DATA_DIR")
def test_a_model_of_another_input_shape_is_one_line_naming_both(tmp_path):
    path = str(tmp_path / "colour.keras")
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(path)
    with pytest.raises(GreatError, match=r"takes inputs of shape \(32, 32, 3\), but mnist has images of "
                                         r"shape \(28, 28, 1\): pass the data set the model was trained on"):
        diagnostics.main([path, "--dataset", "mnist", "--limit", "4"])


def test_the_command_prints_no_tensorflow_start_up_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # a fresh shell
    result = subprocess.run([sys.executable, "-m", "great_tf.diagnostics", str(tmp_path / "none.keras"),
                             "--dataset", "mnist"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr == f"error: no saved model at {tmp_path / 'none.keras'}: pass a .keras file " \
                            f"written by model.save()\n"
