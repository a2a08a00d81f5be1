"""Per-example distillation losses (docs/design.md#distillation)."""

import tensorflow as tf

from great_tf.losses import binary_ce, sparse_ce
from great_tf.precision import full_precision


def hinton_kl(student_logits, teacher_logits, temperature):
    """KL(softmax(t / T) || softmax(s / T)) per example."""
    teacher_log_p = tf.nn.log_softmax(full_precision(teacher_logits) / temperature)
    student_log_p = tf.nn.log_softmax(full_precision(student_logits) / temperature)
    return tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)


def hinton_loss(labels, student_logits, teacher_logits, alpha, temperature):
    """(1 - alpha) * CE + alpha * T^2 * KL per example. The T^2 keeps the soft term's gradient
    on the scale of the hard term's as T grows (Hinton et al. 2015, Sec. 2)."""
    kl = hinton_kl(student_logits, tf.stop_gradient(teacher_logits), temperature)
    return (1.0 - alpha) * sparse_ce(labels, student_logits) + alpha * temperature**2 * kl


def sobolev_distance(student_gradients, teacher_gradients):
    """||g_s - g_t||^2 per example, summed over every input dimension."""
    diff = student_gradients - tf.stop_gradient(teacher_gradients)
    return tf.reduce_sum(tf.reshape(tf.square(diff), [tf.shape(diff)[0], -1]), axis=1)


def discriminator_losses(teacher_logits, student_logits):
    """(BCE(f(g_t), 1), BCE(f(g_s), 0)) per example, from the discriminator's logits."""
    return binary_ce(1.0, teacher_logits), binary_ce(0.0, student_logits)
