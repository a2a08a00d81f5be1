"""Saved models load in a fresh process through great_tf.saving.load_model."""

import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

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


# -- every wrapper saves like a Keras model, built or not ------------------------------------------
# A user's own small networks; the wrappers are never called before they are saved.

def small_net(units, seed, shape=(4, 4, 1)):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    hidden = keras.layers.Dense(6, activation="tanh")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(units)(hidden))


def small_wrapper(kind, seed):
    """(compiled wrapper, targets) of `kind`, with schedules and a second optimizer where the
    wrapper has them; `seed` draws the initial weights."""
    from great_tf import distill, mtl
    from great_tf.defense import GreatDefense
    from great_tf.schedules import PolyRamp, poly_adam

    rng = np.random.default_rng(0)
    y = np.arange(16) % 3
    if kind == "distill":
        model = distill.HintonDistiller(small_net(3, seed), small_net(3, seed + 1), alpha=0.3,
                                        temperature=2.0)
    elif kind == "great distill":
        model = distill.GreatDistiller(small_net(3, seed), small_net(3, seed + 1),
                                       small_net(1, seed + 2), alpha=0.2)
    elif kind == "defense":
        model = GreatDefense(small_net(3, seed), small_net(3, seed + 1), "great+ce",
                             alpha=PolyRamp(1.0, 2, 3), beta=PolyRamp(2.0, 2, 3))
    else:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((4, 4, 1))
        encoder = keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(inputs))
        decoders = {}
        for name, units in (("a", 3), ("b", 1)):
            feature = keras.Input((4, 4, 8))
            pooled = keras.layers.GlobalAveragePooling2D()(feature)
            decoders[name] = keras.Model(feature, keras.layers.Dense(units)(pooled))
        model = mtl.GreatMTL(encoder, decoders, (mtl.Task("a", "classification", 3),
                                                 mtl.Task("b", "regression", 1)))
        y = {"a": y, "b": rng.random((16, 1)).astype("float32")}
    optimizers = {name: poly_adam(1e-2 * (i + 1), 2, 3)
                  for i, name in enumerate(("optimizer", *model.optimizer_variables()))}
    model.compile(**optimizers)
    return model, y


WRAPPERS = ("distill", "great distill", "defense", "mtl")
X = np.random.default_rng(1).random((16, 4, 4, 1)).astype("float32")


def predictions(model):
    outputs = model(X, training=False)
    return [np.asarray(v) for v in (outputs.values() if isinstance(outputs, dict) else [outputs])]


def assert_same_predictions(a, b):
    for p, q in zip(predictions(a), predictions(b), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_checkpoints_of_every_wrapper_reload_and_training_continues(kind, tmp_path):
    from great_tf.saving import load_model

    model, y = small_wrapper(kind, seed=0)
    paths = {"keras": str(tmp_path / "model.keras"), "weights": str(tmp_path / "model.weights.h5"),
             "backup": str(tmp_path / "backup")}
    callbacks = [keras.callbacks.ModelCheckpoint(paths["keras"]),
                 keras.callbacks.ModelCheckpoint(paths["weights"], save_weights_only=True),
                 keras.callbacks.BackupAndRestore(paths["backup"], delete_checkpoint=False)]
    model.fit(X, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)

    loaded = load_model(paths["keras"], compile=True)
    assert type(loaded) is type(model)
    assert_same_predictions(loaded, model)
    fresh, _ = small_wrapper(kind, seed=5)
    fresh.load_weights(paths["weights"])
    assert_same_predictions(fresh, model)

    # The reloaded wrapper, and one resumed by BackupAndRestore, continue the same training:
    # same optimizer steps, schedules and states (GREAT's first-batch losses) as the original.
    resumed, _ = small_wrapper(kind, seed=7)
    history = resumed.fit(X, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                          callbacks=[keras.callbacks.BackupAndRestore(paths["backup"])])
    assert history.epoch == [1]
    loaded.fit(X, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.fit(X, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_predictions(loaded, model)
    assert_same_predictions(resumed, model)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 4


def test_every_registered_wrapper_saves_and_reloads_before_it_is_called(tmp_path):
    """Every defense mode, distillation objective and multi-task method (GradNorm's shared kernel
    saved by its path): a `.keras` file of the unfitted wrapper reloads to the same predictions."""
    from great_tf import defense, distill, mtl
    from great_tf.saving import load_model

    wrappers = [defense.GreatDefense(small_net(3, 0), small_net(3, 1), mode)
                for mode in defense.available_modes()]
    wrappers += [distill.build_distiller(method, small_net(3, 0), small_net(3, 1), small_net(1, 2))
                 for method in distill.available_methods()]
    tasks = (mtl.Task("a", "classification", 3), mtl.Task("b", "regression", 1))
    for method in mtl.available_methods():
        inputs = keras.Input((4, 4, 1))
        encoder = keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same")(inputs))
        decoders = {t.name: small_net(t.units, 3, shape=(4, 4, 8)) for t in tasks}
        wrappers.append(mtl.method_class(method)(encoder, decoders, tasks))
    for i, model in enumerate(wrappers):
        path = str(tmp_path / f"{i}.keras")
        model.save(path)
        loaded = load_model(path)
        assert type(loaded) is type(model)
        assert_same_predictions(loaded, model)


def test_a_wrapper_with_an_unserializable_schedule_names_it():
    from great_tf.defense import GreatDefense
    from great_tf.errors import GreatError

    class Halve:  # a callable of the step without get_config
        def __call__(self, step):
            return 0.5

    model = GreatDefense(small_net(3, 0), small_net(3, 1), "great", alpha=Halve())
    with pytest.raises(GreatError, match="its alpha .Halve. is not serializable"):
        model.get_config()


@pytest.mark.parametrize("kind", ("great distill", "defense"))
def test_keras_tuner_default_trial_flow_on_a_wrapper(kind, tmp_path):
    import keras_tuner as kt

    def build(hp):
        hp.Choice("unused", [1])
        return small_wrapper(kind, seed=0)[0]

    y = np.arange(16) % 3
    tuner = kt.RandomSearch(build, objective=kt.Objective("val_loss", "min"), max_trials=1,
                            directory=str(tmp_path), project_name="trial", seed=0)
    tuner.search(X, y, epochs=1, batch_size=8, validation_data=(X, y), verbose=0)
    best = tuner.get_best_models(1)[0]  # rebuilt by the hypermodel, weights from the checkpoint
    trial = tuner.oracle.get_best_trials(1)[0]
    assert np.isfinite(trial.score)
    assert best.evaluate(X, y, batch_size=8, return_dict=True, verbose=0)["loss"] == pytest.approx(
        trial.score, rel=1e-5)
