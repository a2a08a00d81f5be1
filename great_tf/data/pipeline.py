"""tf.data pipelines over in-memory arrays whose order depends only on (seed, epoch).

Because epoch k's shuffle is a pure function of the seed and k, a run resumed at epoch k sees
exactly the batches the uninterrupted run would have seen.
"""

import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError


def num_examples(arrays):
    sizes = {len(a) for a in tf.nest.flatten(arrays)}
    if len(sizes) != 1:
        raise GreatError(f"inputs and targets disagree on the number of examples: {sorted(sizes)}")
    return sizes.pop()


def steps_per_epoch(n, batch_size):
    if batch_size < 1:
        raise GreatError(f"--batch-size must be at least 1, got {batch_size}")
    if n < batch_size:
        raise GreatError(
            f"batch size {batch_size} is larger than the {n} training examples: lower --batch-size"
        )
    return n // batch_size


def train_dataset(arrays, batch_size, seed, epochs, initial_epoch=0, augment=None):
    """Shuffled, full batches for epochs `initial_epoch .. epochs-1`, concatenated.

    `arrays` is any nest of equally long arrays; `augment(batch, seed)` may transform each batch
    with stateless random ops, given a per-batch seed.
    """
    n = num_examples(arrays)
    steps = steps_per_epoch(n, batch_size)
    tensors = tf.nest.map_structure(tf.constant, arrays)

    def epoch_indices(epoch):
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch])))
        return tf.data.Dataset.from_tensor_slices(order[: steps * batch_size]).batch(batch_size)

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_indices)
    ds = ds.map(lambda idx: tf.nest.map_structure(lambda t: tf.gather(t, idx), tensors),
                num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.enumerate().map(
            lambda i, batch: augment(batch, tf.stack([tf.cast(seed, tf.int64) + 7919, i])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(arrays, batch_size):
    """Every example once, in order, the last batch possibly short."""
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def take(arrays, count):
    """The first `count` examples of every array (all of them when count is None)."""
    if count is None:
        return arrays
    return tf.nest.map_structure(lambda a: np.asarray(a)[:count], arrays)
