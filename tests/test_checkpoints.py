import keras
import numpy as np

from great_tf import checkpoints, mtl


def great_model():
    keras.utils.set_random_seed(0)
    model = mtl.build_mtl_model("great", width=2)
    return mtl.compile_mtl(model, steps_per_epoch=4, epochs=2)


def test_restore_brings_back_every_weight_and_optimizer_variable(tmp_path):
    model = great_model()
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype(np.float32)
    y = {"class": rng.integers(0, 10, 4).astype(np.int32),
         "colour": rng.random((4, 32, 32, 3)).astype(np.float32), "edges": x, "auto": x}
    model.train_step((x, y))
    epoch, manager = checkpoints.checkpoint_manager(model, str(tmp_path))
    epoch.assign(1)
    manager.save()

    fresh = great_model()
    assert checkpoints.restore_latest(fresh, str(tmp_path)) == 1
    # Decoder BatchNorm statistics sit behind a dict of models: the case a plain
    # tf.train.Checkpoint(model=...) misses.
    moving = [v for v in model.weights if "moving_mean" in v.path and v.path.startswith("up0")]
    assert moving and not np.allclose(moving[0].numpy(), 0.0)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    optimizers = checkpoints.model_optimizers(model)
    assert set(optimizers) == {"optimizer", "weight_optimizer", "classifier_optimizer"}
    for name, optimizer in optimizers.items():
        for a, b in zip(optimizer.variables, checkpoints.model_optimizers(fresh)[name].variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name} {a.path}")


def test_no_checkpoint_means_start_from_epoch_zero(tmp_path):
    assert checkpoints.restore_latest(great_model(), str(tmp_path / "empty")) == 0
