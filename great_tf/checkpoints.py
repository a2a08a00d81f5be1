"""Checkpoints at every epoch end, and resuming an interrupted run where it stopped.

A checkpoint holds the model (every sub-network, GAL and method weight), every optimizer the model
owns (their step counters drive the learning-rate schedules) and the number of finished epochs.
Data order depends only on (seed, epoch) (`great_tf.data.train_dataset`), so a resumed run repeats
exactly what the uninterrupted run would have done.
"""

import shutil
import tempfile

import keras
import tensorflow as tf


def model_optimizers(model):
    """Every optimizer the model holds as an attribute (`optimizer`, `weight_optimizer`, ...)."""
    found = {}
    for name, value in sorted(vars(model).items()):
        if isinstance(value, keras.optimizers.Optimizer):
            found[name.lstrip("_")] = value
    if getattr(model, "optimizer", None) is not None:
        found["optimizer"] = model.optimizer
    return found


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a `tf.train.Checkpoint` of the model and its optimizers after every epoch."""

    def __init__(self, directory, max_to_keep=1):
        super().__init__()
        self.directory = directory
        self.max_to_keep = max_to_keep
        self._manager = None

    def on_train_begin(self, logs=None):
        from great_tf.distribute import is_chief

        # Multi-worker: every worker saves (the save may need collective ops), only the chief
        # into `directory`; the others into a temporary folder deleted at the end (TF's
        # documented pattern).
        chief = is_chief(self.model.distribute_strategy)
        self._scratch = None if chief else tempfile.mkdtemp(prefix="great_tf_ckpt_")
        directory = self._scratch or self.directory
        self._epoch, self._manager = checkpoint_manager(self.model, directory, self.max_to_keep)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch.assign(epoch + 1)
        self._manager.save(checkpoint_number=epoch + 1)

    def on_train_end(self, logs=None):
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


def checkpoint_manager(model, directory, max_to_keep=1):
    """A manager over every model weight and optimizer variable, listed explicitly.

    Listing them matters: Keras' dict attributes (a model's dict of decoders, say) are not
    TensorFlow trackables, so a checkpoint of the model object alone silently misses whatever is
    reachable only through them (BatchNormalization moving statistics, for one).
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs")
    state = {"model_weights": list(model.weights)}
    for name, optimizer in model_optimizers(model).items():
        state[name] = list(optimizer.variables)
    checkpoint = tf.train.Checkpoint(finished_epochs=epoch, **state)
    return epoch, tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)


def restore_latest(model, directory):
    """Restores the newest checkpoint in `directory` into the compiled `model`.

    Returns the number of epochs it had finished (0 when there is no checkpoint).
    """
    epoch, manager = checkpoint_manager(model, directory)
    if manager.latest_checkpoint is None:
        return 0
    manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    return int(epoch.numpy())
