"""Per-example input gradients, built so that a double backprop through them is exact.

Every gradient here comes from a loss *summed* over the batch, so row b is example b's own
gradient: it does not shrink with the batch size and does not change when a batch is split across
replicas (DESIGN.md section 2, step 2). Call these inside an outer `tf.GradientTape` to
differentiate the gradients again with respect to the model's weights.
"""

import tensorflow as tf


def input_gradients(model, x, y, training=False):
    """(dCE/dx per example, logits) for a classifier `model` with integer labels `y`."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=training)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)
        )
    return tape.gradient(loss, x), logits


def masked_input_gradients(model, x, y, training=False):
    """(g, logits) with g = (p_y - 1) * da_y/dx per example: the label-masked input gradient.

    The loss gradient at the logits, p - onehot(y), is masked to the true class after the softmax
    and backpropagated to the input. The mask is passed as `output_gradients` rather than
    through a stop-gradient surrogate, so that an outer tape still sees how (p_y - 1) depends on
    the weights: the second-order gradient through g stays exact.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=training)
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    mask = onehot * (tf.nn.softmax(logits) - 1.0)
    return tape.gradient(logits, x, output_gradients=mask), logits
