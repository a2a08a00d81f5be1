"""Per-example input gradients, built so that a double backprop through them is exact.

Every gradient here comes from a loss *summed* over the batch, so row b is example b's own
gradient: it does not shrink with the batch size and does not change when a batch is split across
replicas (docs/design.md#defense). Call these inside an outer `tf.GradientTape` to
differentiate the gradients again with respect to the model's weights.

The inner tapes watch only `x` (`watch_accessed_variables=False`): an outer tape still records
every op of the inner backward pass, weights included, so the double backprop is unchanged, but no
weight gradient is requested where only the input's is wanted.

TF 2.21's oneDNN `Conv2DBackpropFilter` on CPU crashes the process for odd batch sizes at narrow
widths (ResNet-18 width 4 or 8, batch 3, 5, 7; measured). Eager mode evaluates every weight gradient
of a convolution even when only the input's is asked for, so input gradients for reports should run
compiled (`compiled_input_gradients`, `saliency_maps`), where the unused filter gradient is pruned;
training batches should be even.
"""

import tensorflow as tf

from great_tf.losses import sparse_ce
from great_tf.precision import full_precision, scale, unscale


def input_gradients(model, x, y, training=False, loss_scale=None):
    """(dCE/dx per example, logits) for a classifier `model` with integer labels `y`.

    With a `loss_scale` (mixed precision, `great_tf.precision.loss_scale`), the summed loss is
    multiplied by it so that the float16 backward pass does not underflow, and the gradient is
    divided by it again, in float32.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model(x, training=training)
        loss = tf.reduce_sum(sparse_ce(y, logits))
        loss = scale(loss, loss_scale)
    return unscale(tape.gradient(loss, x), loss_scale), logits


def masked_input_gradients(model, x, y, training=False, loss_scale=None):
    """(g, logits) with g = (p_y - 1) * da_y/dx per example: the label-masked input gradient.

    The loss gradient at the logits, p - onehot(y), is masked to the true class after the softmax
    and backpropagated to the input. The mask is passed as `output_gradients` rather than
    through a stop-gradient surrogate, so that an outer tape still sees how (p_y - 1) depends on
    the weights: the second-order gradient through g stays exact. A `loss_scale` multiplies the
    mask (and divides g), as in `input_gradients`.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model(x, training=training)
    probs = tf.nn.softmax(full_precision(logits))
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], dtype=probs.dtype)
    mask = tf.cast(scale(onehot * (probs - 1.0), loss_scale), logits.dtype)
    return unscale(tape.gradient(logits, x, output_gradients=mask), loss_scale), logits


compiled_input_gradients = tf.function(input_gradients, reduce_retracing=True)
compiled_masked_input_gradients = tf.function(masked_input_gradients, reduce_retracing=True)


def saliency_maps(model, x, y):
    """|dCE/dx| maximised over channels, per example (Simonyan et al. 2013; paper Fig. 4 left)."""
    grads, _ = compiled_input_gradients(model, tf.convert_to_tensor(x, tf.float32), y, training=False)
    return tf.reduce_max(tf.abs(grads), axis=-1)
