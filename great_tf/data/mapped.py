"""tf.data pipelines over arrays too large for memory: memory-mapped `.npy` files (NYUv2).

`great_tf.data.train_dataset` copies its arrays into one tensor, which a 15 GB split cannot
afford. These pipelines keep the arrays where they are (a NumPy memory map reads only the pages
a batch touches) and gather each batch on the host. They visit the examples in exactly the
order `great_tf.data.train_dataset` / `eval_dataset` would for the same seed, so resumed runs
see the same batches. uint8 arrays (images) become float32 in [0, 1] one batch at a time;
other arrays become float32.
"""

import numpy as np
import tensorflow as tf

from great_tf.data.pipeline import num_examples, steps_per_epoch


def _as_float(array):
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.asarray(array, np.float32)


def _gather(arrays):
    """A tf.data map from a batch of indices to the batch of `arrays` (any nest)."""
    flat = tf.nest.flatten(arrays)

    def read(indices):
        return [_as_float(a[np.asarray(indices)]) for a in flat]

    def gather(indices):
        batch = tf.numpy_function(read, [indices], [tf.float32] * len(flat), stateful=False)
        for tensor, array in zip(batch, flat):
            tensor.set_shape((None,) + tuple(array.shape[1:]))
        return tf.nest.pack_sequence_as(arrays, batch)

    return gather


def mapped_train_dataset(arrays, batch_size, seed, epochs, initial_epoch=0):
    """Shuffled full batches for epochs `initial_epoch .. epochs-1`: the order of
    `great_tf.data.train_dataset` (a stateless shuffle of (seed, epoch))."""
    n = num_examples(arrays)
    steps = steps_per_epoch(n, batch_size)

    def epoch_indices(epoch):
        order = tf.argsort(tf.random.stateless_uniform(
            [n], seed=tf.stack([tf.constant(seed, tf.int64), epoch])))
        return tf.data.Dataset.from_tensor_slices(order[: steps * batch_size]).batch(batch_size)

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_indices)
    return ds.map(_gather(arrays), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def mapped_eval_dataset(arrays, batch_size):
    """Every example once, in order, the last batch possibly short."""
    n = num_examples(arrays)
    ds = tf.data.Dataset.range(n).batch(batch_size)
    return ds.map(_gather(arrays), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
