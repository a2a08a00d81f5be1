"""--mixed-precision: mixed_float16 steps with loss scaling agree with the float32 steps.

Each GREAT step is run once in float32 and once under mixed_float16 from the same weights, with
plain SGD (an update is -lr * gradient, so a loss scale left in a gradient shows up as a factor
2^15 in the update). Every sub-network's update must point the same way (cosine > 0.99) and have
the same size (within 10%) in both precisions.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import checkpoints
from great_tf.defense import GreatDefense
from great_tf.distill import build_distiller
from great_tf.models import batch_norm, cnn5, cnn5_discriminator
from great_tf.mtl import GreatMTL, Task
from great_tf.precision import LossScaleOptimizer, is_mixed, use_mixed_precision

LR = 0.05
TASKS = (Task("c", "classification", 3), Task("r", "regression", 1))


@pytest.fixture(autouse=True)
def restore_policy():
    previous = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(previous)


def sgd():
    return keras.optimizers.SGD(LR)


# -- tiny models -----------------------------------------------------------------------------------

def dense(units, inputs_shape, activation=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(inputs_shape)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(inputs))


def build_mtl():
    decoders = {t.name: dense(t.units, (4,), seed=i + 1) for i, t in enumerate(TASKS)}
    model = GreatMTL(dense(4, (3,), "tanh"), decoders, TASKS, classifier=dense(2, (4,), seed=5))
    model.compile(sgd(), weight_optimizer=sgd(), classifier_optimizer=sgd())
    groups = {"network": model.network_variables, "classifier": model.classifier.trainable_variables,
              "gals": model.gammas}
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(8, 3)).astype("float32"),
            {"c": rng.integers(0, 3, 8).astype("int32"), "r": rng.normal(size=(8, 1)).astype("float32")})
    return model, groups, data


def conv_net(name, act, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Activation(act)(batch_norm()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)


def image_data(n=4):
    x = np.random.default_rng(2).uniform(size=(n, 6, 6, 2)).astype("float32")
    return x, (np.arange(n) % 3).astype("int32")


def build_defense():
    model = GreatDefense(conv_net("main", "relu", 0), conv_net("aux", "leaky_relu", 1), "great+ce",
                         alpha=1.0, beta=2.0)
    model.compile(sgd(), aux_optimizer=sgd())
    groups = {"main": model.main.trainable_variables, "auxiliary": model.auxiliary.trainable_variables}
    return model, groups, image_data()


def build_distill(initial_scale=2.0**10):
    """At Keras' default initial scale, 2^15, the student's float16 input gradient overflows on
    this batch of 4 (training-mode BatchNorm): the first step would be skipped."""
    keras.utils.set_random_seed(0)
    student, teacher = cnn5((6, 6, 2), 3, width=2, hidden=4), cnn5((6, 6, 2), 3, width=2, hidden=4)
    model = build_distiller("great", teacher, student, cnn5_discriminator((6, 6, 2), width=2, hidden=4))

    def optimizer():
        if is_mixed():
            return LossScaleOptimizer(sgd(), initial_scale=initial_scale)
        return sgd()

    model.compile(optimizer(), discriminator_optimizer=optimizer())
    groups = {"student": student.trainable_variables,
              "discriminator": model.discriminator.trainable_variables}
    return model, groups, image_data()


BUILDERS = {"mtl": build_mtl, "defense": build_defense, "distill": build_distill}


# -- one step in each precision --------------------------------------------------------------------

def one_step(build, mixed, initial=None):
    """(model, its weights before, {group: flat update}) of one train step from `initial`."""
    use_mixed_precision(mixed)
    model, groups, (x, y) = build()
    if initial is not None:
        model.set_weights(initial)
    start = model.get_weights()
    before = {k: [v.numpy().copy() for v in vs] for k, vs in groups.items()}
    model.train_on_batch(x, y)
    updates = {k: np.concatenate([(v.numpy() - b).ravel() for v, b in zip(groups[k], before[k])])
               for k in groups}
    return model, start, updates


def agreement(u16, u32):
    """(cosine, norm ratio) of two updates; NaN (fails every check) if the step was skipped."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = float(u16 @ u32 / (np.linalg.norm(u16) * np.linalg.norm(u32)))
        return cosine, float(np.linalg.norm(u16) / np.linalg.norm(u32))


def mixed_and_float32_updates(name):
    mixed, start, u16 = one_step(BUILDERS[name], True)
    _, _, u32 = one_step(BUILDERS[name], False, initial=start)
    return mixed, u16, u32


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_mixed_step_agrees_with_the_float32_step(name):
    mixed, u16, u32 = mixed_and_float32_updates(name)
    for v in mixed.trainable_variables:  # float32 master weights, finite after the step
        assert v.dtype == "float32" and np.all(np.isfinite(v.numpy())), v.path
    for opt_name, opt in checkpoints.model_optimizers(mixed).items():
        assert isinstance(opt, keras.optimizers.LossScaleOptimizer), opt_name
        assert int(opt.iterations.numpy()) == 1, opt_name  # the step was applied, not skipped
        assert any("dynamic_scale" in v.path for v in opt.variables), opt_name  # checkpointed
        assert float(opt.dynamic_scale.numpy()) == opt.initial_scale
    for group in u32:
        cosine, ratio = agreement(u16[group], u32[group])
        assert cosine > 0.99 and 0.9 < ratio < 1.1, (group, cosine, ratio)


@pytest.mark.parametrize("name, module", [("mtl", "great_tf.mtl.methods.great"), ("defense", "great_tf.gradients")])
def test_the_check_catches_a_loss_scale_left_in_an_auxiliary_input(name, module, monkeypatch):
    """Task gradients (MTL) or input gradients (defense) fed to the auxiliary network still
    multiplied by the loss scale: the auxiliary network's update is far off."""
    import importlib

    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, "unscale", lambda value, factor, dtype=None: value)
    _, u16, u32 = mixed_and_float32_updates(name)
    group = {"mtl": "classifier", "defense": "auxiliary"}[name]
    cosine, ratio = agreement(u16[group], u32[group])
    assert not (cosine > 0.99 and 0.9 < ratio < 1.1), (cosine, ratio)


def test_an_overflowing_step_is_skipped_and_the_scale_halved():
    use_mixed_precision(True)
    model, groups, (x, y) = build_distill(initial_scale=2.0**15)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.train_on_batch(x, y)
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())
    for opt in (model.optimizer, model.discriminator_optimizer):
        assert float(opt.dynamic_scale.numpy()) == 2.0**14 and int(opt.iterations.numpy()) == 0


def test_an_overflow_on_one_replica_skips_the_step_on_all():
    """Keras' LossScaleOptimizer would look at the first replica's gradients only."""
    # Not collective ops: a second MirroredStrategy on the same devices in one process reuses
    # their collective keys (tests/conftest.py has the session's) and TF aborts the step.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        w = keras.Variable(np.ones(2, "float32"))
        opt = LossScaleOptimizer(sgd(), initial_scale=4.0)
        opt.build([w])

    @tf.function
    def step(bad_replica):
        def replica_step():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grad = tf.where(tf.equal(replica, bad_replica), np.inf, 1.0) * tf.ones(2)
            opt.apply([grad], [w])
        strategy.run(replica_step)

    step(tf.constant(1))
    np.testing.assert_array_equal(w.numpy(), [1.0, 1.0])
    assert float(opt.dynamic_scale.numpy()) == 2.0
    step(tf.constant(-1))  # no overflow: applied, both replicas' gradients summed and unscaled
    np.testing.assert_allclose(w.numpy(), 1.0 - LR * 2 * 1.0 / 2.0)


def test_trainer_runs_with_mixed_precision_and_checkpoints_the_loss_scale(tmp_path, cache_dir):
    from great_tf import mtl
    from trainers import mtl as trainer

    rows = trainer.main(["--logdir", str(tmp_path), "--width", "2", "--batch-size", "8",
                         "--train-limit", "16", "--eval-limit", "16", "--verbose", "0",
                         "--method", "great", "--epochs", "1", "--steps-per-epoch", "1",
                         "--mixed-precision"])
    assert keras.config.dtype_policy().name == "mixed_float16"
    assert np.isfinite(rows[0]["class error %"]) and np.isfinite(rows[0]["colour RMSE"])
    model = mtl.build_mtl_model("great", width=2)
    mtl.compile_mtl(model, steps_per_epoch=1, epochs=1)
    assert checkpoints.restore_latest(model, os.path.join(tmp_path, "great", "checkpoints")) == 1
    assert model.classifier_optimizer.iterations.numpy() == 1
    assert all(v.dtype == "float32" and np.all(np.isfinite(v.numpy())) for v in model.weights
               if v.dtype.startswith("float"))


def test_resume_refuses_to_switch_precision(tmp_path):
    import argparse

    from great_tf.errors import GreatError
    from trainers import flags

    def args(mixed, resume):
        return argparse.Namespace(dataset="d", preset="small", epochs=1, batch_size=8, width=2,
                                  train_limit=None, steps_per_epoch=1, eval_limit=None, seed=0,
                                  mixed_precision=mixed, resume=resume)

    for first, second in ((True, False), (False, True)):
        run_dir = str(tmp_path / f"run_{first}")
        flags.prepare_run_dir(run_dir, args(first, False))
        flags.mark_started(run_dir)  # the first checkpoint writes the run's config
        flags.prepare_run_dir(run_dir, args(first, True))  # same settings: resumes
        with pytest.raises(GreatError, match="mixed_precision"):
            flags.prepare_run_dir(run_dir, args(second, True))
