"""tf.data pipelines over arrays too large for memory: memory-mapped `.npy` files (NYUv2).

`great_tf.data.train_dataset` copies its arrays into one tensor, which a 15 GB split cannot
afford. These pipelines keep the arrays where they are (a NumPy memory map reads only the pages
a batch touches) and gather each batch on the host. They give exactly the batches of the
run's training stream (great_tf/data/pipeline.py: batch b is a pure function of (seed, b)) and
of `eval_dataset`, so a resumed run re-enters the stream where it stood (docs/design.md#resume).
uint8 arrays (images) become float32 in [0, 1] one batch at a time; other arrays float32.
"""

import numpy as np
import tensorflow as tf

from great_tf.data.pipeline import num_examples, stream_bounds, stream_indices


def _as_float(batch):
    if batch.dtype == tf.uint8:
        return tf.cast(batch, tf.float32) * (1.0 / 255.0)
    return tf.cast(batch, tf.float32)


def _gather(arrays):
    """A tf.data map from a batch of indices to the batch of `arrays` (any nest). The host only
    copies the examples out of the memory maps, in their stored dtype (uint8 images are 4x
    smaller than float32); TensorFlow's own kernels convert them, outside the GIL."""
    flat = tf.nest.flatten(arrays)
    dtypes = [tf.as_dtype(a.dtype) for a in flat]

    def read(indices):
        return [a[np.asarray(indices)] for a in flat]

    def gather(indices):
        batch = tf.numpy_function(read, [indices], dtypes, stateful=False)
        for tensor, array in zip(batch, flat):
            tensor.set_shape((None,) + tuple(array.shape[1:]))
        return tf.nest.pack_sequence_as(arrays, [_as_float(t) for t in batch])

    return gather


def mapped_stream_dataset(arrays, batch_size, seed, start, stop):
    """Stream batches [start, stop) of the run (great_tf/data/pipeline.py): the batches of
    `great_tf.data.pipeline.stream_dataset` for the same seed, gathered from the memory maps."""
    n = num_examples(arrays)
    gather = _gather(arrays)
    ds = stream_indices(n, batch_size, seed, start, stop).map(
        lambda b, idx: gather(idx), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def mapped_train_dataset(arrays, batch_size, seed, epochs, initial_epoch=0, steps=None):
    """The stream batches of training epochs `initial_epoch .. epochs-1` (as
    `great_tf.data.train_dataset`, without augmentation)."""
    start, stop = stream_bounds(num_examples(arrays), batch_size, epochs, initial_epoch, steps)
    return mapped_stream_dataset(arrays, batch_size, seed, start, stop)


def mapped_eval_dataset(arrays, batch_size):
    """Every example once, in order, the last batch possibly short."""
    n = num_examples(arrays)
    ds = tf.data.Dataset.range(n).batch(batch_size)
    return ds.map(_gather(arrays), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
