"""Per-example losses used across the library: written once, imported everywhere.

Every function returns one value per example (no reduction): callers sum over the replica's
examples and divide by the global batch (docs/design.md#distribution), so the same code is exact
on one device and under any `tf.distribute` strategy. Logits in float16 (mixed precision) are
cast to float32 first.
"""

import tensorflow as tf

from great_tf.precision import full_precision


def sparse_ce(labels, logits):
    """Cross-entropy of integer `labels` against `logits`, per example."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(tf.reshape(labels, [-1]), tf.int32), logits=full_precision(logits))


def mean_squared_error(target, output):
    """Squared error averaged over every non-batch axis, per example."""
    output = full_precision(output)
    error = tf.square(tf.cast(target, output.dtype) - output)
    return tf.reduce_mean(tf.reshape(error, [tf.shape(error)[0], -1]), axis=1)


def binary_ce(labels, logits):
    """Sigmoid cross-entropy of 0/1 `labels` against one logit per example, per example."""
    logits = tf.reshape(full_precision(logits), [-1])
    labels = tf.broadcast_to(tf.cast(labels, logits.dtype), tf.shape(logits))
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def replica_mean(per_example, global_batch):
    """This replica's share of the global-batch mean: sum over its examples / the global batch."""
    return tf.reduce_sum(per_example) / tf.cast(global_batch, per_example.dtype)


def masked_pixel_mean(values, valid):
    """Per example: the mean of `values` (N, ...) over its `valid` entries (same shape, bool), 0
    for an example with none. Invalid entries are dropped with tf.where rather than multiplied
    by 0, so an inf there cannot turn the loss into NaN, and the gradient they receive is exactly
    0 (docs/design.md#nyuv2)."""
    values = full_precision(values)
    kept = tf.where(valid, values, tf.zeros_like(values))
    per_example = [tf.shape(values)[0], -1]
    count = tf.reduce_sum(tf.reshape(tf.cast(valid, values.dtype), per_example), axis=1)
    total = tf.reduce_sum(tf.reshape(kept, per_example), axis=1)
    return total / tf.maximum(count, 1.0)
