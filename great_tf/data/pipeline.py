"""tf.data pipelines over in-memory arrays: one seeded stream of training batches that a resumed
run re-enters at the exact batch where the interrupted run stood (docs/design.md#resume).

The training stream of a run: data epoch 0's batches (the examples in an order drawn from
(seed, 0), cut into B = n // batch_size full batches, the remainder dropped), then data epoch
1's (order from (seed, 1)), and so on. Batch b of the stream (its absolute index in the run) is
batch b mod B of data epoch b div B, and its augmentation seed is (seed + 7919, b). Keras'
training epoch e consumes stream batches [e * S, (e + 1) * S), S the steps per epoch: S = B
without --steps-per-epoch, so training and data epochs coincide; with a smaller S a data epoch
spans several training epochs and the next training epoch continues where the last one stopped
(every example is still seen once per data epoch). Everything about batch b is a pure function
of (seed, b), so a run resumed with the checkpoint's data position `b` sees exactly the batches
the uninterrupted run would have seen.
"""

import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError

AUGMENT_SEED_OFFSET = 7919  # augmentation seeds (seed + 7919, b) differ from shuffle seeds (seed, epoch)


def num_examples(arrays):
    sizes = {len(a) for a in tf.nest.flatten(arrays)}
    if len(sizes) != 1:
        raise GreatError(f"inputs and targets disagree on the number of examples: {sorted(sizes)}")
    return sizes.pop()


def steps_per_epoch(n, batch_size):
    """B: the full batches in one data epoch of `n` examples."""
    if batch_size < 1:
        raise GreatError(f"--batch-size must be at least 1, got {batch_size}")
    if n < batch_size:
        raise GreatError(
            f"batch size {batch_size} is larger than the {n} training examples: lower --batch-size"
        )
    return n // batch_size


def data_position(batch, batches_per_epoch):
    """(data epoch, batch within it) of the stream's absolute batch index `batch`."""
    return divmod(int(batch), int(batches_per_epoch))


def stream_indices(n, batch_size, seed, start, stop):
    """(absolute batch index b, example indices of batch b) for b in [start, stop) of the stream."""
    per_epoch = steps_per_epoch(n, batch_size)
    if stop <= start:
        return tf.data.Dataset.from_tensor_slices(
            (tf.zeros([0], tf.int64), tf.zeros([0, batch_size], tf.int32)))
    first_epoch, skip = data_position(start, per_epoch)
    last_epoch = (stop - 1) // per_epoch

    def epoch_batches(epoch):
        order = tf.argsort(tf.random.stateless_uniform(
            [n], seed=tf.stack([tf.constant(seed, tf.int64), epoch])))
        return tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[: per_epoch * batch_size], [per_epoch, batch_size]))

    batches = tf.data.Dataset.range(first_epoch, last_epoch + 1).flat_map(epoch_batches)
    batches = batches.skip(skip).take(stop - start)
    return tf.data.Dataset.zip(tf.data.Dataset.range(start, stop), batches)


def stream_dataset(arrays, batch_size, seed, start, stop, augment=None, gather=None):
    """Stream batches [start, stop) of `arrays` (any nest of equally long arrays).

    `augment(batch, seed)` may transform each batch with stateless random ops; its seed is
    (seed + 7919, b) for the batch's absolute index b, never a count restarted by a new pipeline.
    `gather(indices) -> batch` reads a batch (default: from one in-memory tensor per array; a
    memory-mapped pipeline passes its own reader and keeps the same order and seeds).
    """
    n = num_examples(arrays)
    if gather is None:
        tensors = tf.nest.map_structure(tf.constant, arrays)

        def gather(idx):
            return tf.nest.map_structure(lambda t: tf.gather(t, idx), tensors)

    ds = stream_indices(n, batch_size, seed, start, stop).map(
        lambda b, idx: (b, gather(idx)), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is None:
        ds = ds.map(lambda b, batch: batch)
    else:
        augment_seed = tf.cast(seed, tf.int64) + AUGMENT_SEED_OFFSET
        ds = ds.map(lambda b, batch: augment(batch, tf.stack([augment_seed, b])),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def stream_bounds(n, batch_size, epochs, initial_epoch=0, steps=None):
    """[start, stop) of the stream for training epochs `initial_epoch .. epochs-1` of `steps`
    batches each (default: B, one data epoch per training epoch)."""
    steps = steps or steps_per_epoch(n, batch_size)
    return initial_epoch * steps, epochs * steps


def train_dataset(arrays, batch_size, seed, epochs, initial_epoch=0, augment=None, steps=None):
    """The stream batches of training epochs `initial_epoch .. epochs-1`, `steps` batches each
    (default: every full batch of the data, one data epoch per training epoch); see the module
    docstring for how a capped epoch continues the data epoch."""
    start, stop = stream_bounds(num_examples(arrays), batch_size, epochs, initial_epoch, steps)
    return stream_dataset(arrays, batch_size, seed, start, stop, augment)


def eval_dataset(arrays, batch_size):
    """Every example once, in order, the last batch possibly short."""
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def take(arrays, count):
    """The first `count` examples of every array (all of them when count is None)."""
    if count is None:
        return arrays
    return tf.nest.map_structure(lambda a: np.asarray(a)[:count], arrays)
