import os

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


# -- a save that fails (a full disk) ---------------------------------------------------------------

def fit_three_epochs(run_dir, resume=False):
    """A small regression fitted for 3 epochs of 2 steps through great_tf.runs.fit_resumable."""
    import argparse

    import tensorflow as tf

    from great_tf import runs

    args = argparse.Namespace(dataset="d", preset="small", epochs=3, batch_size=4, width=1,
                              train_limit=None, steps_per_epoch=None, eval_limit=None, seed=0,
                              resume=resume, resume_if_present=False, stop_after=None, verbose=0)

    def stream(start, stop):
        x = np.random.default_rng(1).normal(size=(stop * 4, 2)).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices((x, x[:, :1] - x[:, 1:])).batch(4).skip(start)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # its moments exist before a restore, as ours do
    runs.prepare_run_dir(run_dir, args)
    runs.fit_resumable(model, run_dir, args, stream, None, 3, 2, tensorboard=False)
    return model.get_weights()


def test_a_full_disk_during_a_save_is_one_line_and_resume_recovers_exactly(tmp_path, monkeypatch):
    import errno

    import pytest
    import tensorflow as tf

    from great_tf.errors import GreatError

    uninterrupted = fit_three_epochs(str(tmp_path / "whole"))
    run_dir = str(tmp_path / "run")
    real_save = tf.train.CheckpointManager.save

    def disk_fills_at_epoch_2(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 2:
            os.makedirs(os.path.join(manager.directory, "ckpt-2_temp"))  # the save's partial files
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{manager.directory}/ckpt-2_temp/part-00000; No space left on device [Op:SaveV2]")
        return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", disk_fills_at_epoch_2)
    with pytest.raises(GreatError) as err:
        fit_three_epochs(run_dir)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    assert str(err.value) == (f"cannot save the checkpoint of epoch 2 in {checkpoint_dir} (No space left "
                              f"on device): free disk space (or raise the file-size limit) and run again; "
                              f"--resume continues after epoch 1, its last saved checkpoint")
    assert sorted(os.listdir(checkpoint_dir)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)  # space freed
    resumed = fit_three_epochs(run_dir, resume=True)
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a, b)


def test_a_file_size_limit_during_a_save_is_one_line(tmp_path):
    """A real failed write: a 16 KB file-size limit (`ulimit -f`; Python ignores SIGXFSZ, so the
    write fails with EFBIG, which TensorFlow raises as an OutOfRangeError "File too large")."""
    import resource

    import pytest

    from great_tf.errors import GreatError

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4000)])  # 48 KB of weights
    model.compile("sgd", "mse")
    folder = str(tmp_path / "checkpoints")
    saver = checkpoints.EpochCheckpoint(folder, 1)
    saver.set_model(model)
    saver.on_train_begin()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    try:
        with pytest.raises(GreatError) as err:
            saver.on_epoch_end(0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(err.value) == (f"cannot save the checkpoint of epoch 1 in {folder} (File too large): free "
                              f"disk space (or raise the file-size limit) and run again; no epoch of this "
                              f"run is saved yet")
    assert os.listdir(folder) == []  # the partial save removed
