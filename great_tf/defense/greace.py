"""GREACE, gradient-adversarial cross-entropy (Eq. 6; docs/design.md#defense)."""

import tensorflow as tf

from great_tf.precision import full_precision


def greace_surrogate(labels, logits, aux_probs, beta):
    """Per-example `beta * sum_{j != y} stop_gradient(p´_j) * a_j`, p´ = softmax(á) the auxiliary
    network's probabilities (not its logits).

    Its gradient at the logits is `beta * softmax(á) * 1[ŷ != y]`, so `CE + greace_surrogate` has
    the gradient of Eq. 6; the auxiliary probabilities are constants (no gradient reaches the
    auxiliary network). Only its gradient matters: its value is not a loss to report.
    """
    logits = full_precision(logits)
    num_classes = tf.shape(logits)[-1]
    negatives = 1.0 - tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    weights = tf.stop_gradient(tf.cast(aux_probs, logits.dtype)) * negatives
    beta = tf.cast(beta, logits.dtype) if tf.is_tensor(beta) else tf.constant(beta, logits.dtype)
    return beta * tf.reduce_sum(weights * logits, axis=-1)
