"""GREAT for knowledge distillation (Algorithm 2; docs/design.md#distillation)."""

import keras
import tensorflow as tf

from great_tf.contracts import require_one_logit, require_one_unit
from great_tf.core import classify_gradients
from great_tf.distill.base import DEFAULT_ALPHA, Distiller
from great_tf.distill.losses import discriminator_losses
from great_tf.distribute import global_batch_size
from great_tf.errors import GreatError
from great_tf.gradients import input_gradients
from great_tf.losses import sparse_ce
from great_tf.precision import loss_scale, rescale, scale


class GreatDistiller(Distiller):
    """A binary discriminator f learns to tell the teacher's input gradients (label 1) from the
    student's (label 0); the student receives the reversed discriminator gradient.

    One step: g_t (frozen teacher, inference mode) and g_s (student, training mode, recorded so it
    can be differentiated again); discriminator logits on [g_t; g_s] in one batch (so its
    BatchNorm normalises both with the same statistics) through `classify_gradients` with
    strength alpha; ONE backward pass over (1 - alpha) * CE + [BCE(f(g_t), 1) + BCE(f(g_s), 0)]
    (sums / global batch) gives the discriminator its descent direction and the student
    (1 - alpha) * dCE - alpha * dBCE(f(g_s), 0), the second term by double backprop through g_s.
    g_t is a constant, so no gradient flows into the teacher. The student ascends the
    discriminator's whole loss on the joint batch: with BatchNorm in the discriminator, the
    teacher term depends on g_s through the batch statistics too (the minimax game of a GAN;
    docs/design.md#distillation). alpha = 0.1 (the paper's value).

    Algorithm 2 updates the discriminator (line 7) before it evaluates the reversed gradient
    (line 9); we take both from the same discriminator forward pass (simultaneous updates, as the
    gradient reversal of the paper's Fig. 1a gives), which saves one discriminator pass per step.
    """

    method = "great"
    double_backprop = True

    def __init__(self, teacher, student, discriminator, alpha=DEFAULT_ALPHA["great"], **kwargs):
        super().__init__(teacher, student, **kwargs)
        if discriminator is None:
            raise GreatError("GreatDistiller needs a discriminator over input gradients: pass "
                             "discriminator=... (e.g. great_tf.models.cnn5_discriminator)")
        require_one_logit(discriminator, "the discriminator")
        self.discriminator = discriminator
        self.alpha = float(alpha)
        self.disc_loss_tracker = self.track(keras.metrics.Mean(name="disc_loss"))
        self.adversarial_tracker = self.track(keras.metrics.Mean(name="adversarial"))
        self.disc_teacher_accuracy = self.track(keras.metrics.Mean(name="disc_acc_teacher"))
        self.disc_student_accuracy = self.track(keras.metrics.Mean(name="disc_acc_student"))

    def optimizer_variables(self):
        return {"discriminator_optimizer": self.discriminator.trainable_variables}

    def discriminate(self, g_t, g_s, training, alpha=None):
        """Discriminator logits of teacher and student gradients, from one batch; with `alpha`,
        the student's gradients get the reversed discriminator gradient."""
        both = tf.concat([g_t, g_s], 0)
        if alpha is None:
            logits = self.discriminator(both, training=training)
        else:
            logits = classify_gradients(self.discriminator, both, alpha, training=training)
        # At tracing, in Python: a subclassed discriminator's shape is known only here.
        require_one_unit(self.discriminator, "the discriminator", logits.shape[1:])
        return tf.split(tf.reshape(logits, [-1]), 2)

    def great_gradients(self, x, y):
        """(student grads, discriminator grads, student logits, tracked) of one GREAT step.

        Under mixed precision the one backward pass is scaled by the student optimizer's loss
        scale (the inner ones that compute g_s, g_t too); the discriminator's gradients are
        rescaled to its optimizer's scale.
        """
        batch = global_batch_size(x, x.dtype)
        student_scale = self.input_gradient_scale()
        g_t = self.teacher_input_gradients(x, y)
        student_vars = self.student.trainable_variables
        disc_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            g_s, logits = input_gradients(self.student, x, y, training=True, loss_scale=student_scale)
            ce = sparse_ce(y, logits)
            d_teacher, d_student = self.discriminate(g_t, g_s, training=True, alpha=self.alpha)
            bce_teacher, bce_student = discriminator_losses(d_teacher, d_student)
            total = ((1.0 - self.alpha) * tf.reduce_sum(ce)
                     + tf.reduce_sum(bce_teacher) + tf.reduce_sum(bce_student)) / batch
            total = scale(total, student_scale)
        grads = tape.gradient(total, student_vars + disc_vars)
        disc_grads = rescale(grads[len(student_vars):], student_scale,
                             loss_scale(getattr(self, "discriminator_optimizer", None)))
        tracked = {
            self.loss_tracker: (1.0 - self.alpha) * ce - self.alpha * bce_student,
            self.ce_tracker: ce,
            self.disc_loss_tracker: bce_teacher + bce_student,
            self.adversarial_tracker: bce_student,
            self.disc_teacher_accuracy: tf.cast(d_teacher > 0, tf.float32),
            self.disc_student_accuracy: tf.cast(d_student < 0, tf.float32),
        }
        return grads[: len(student_vars)], disc_grads, logits, tracked

    def student_gradients(self, x, y):
        student_grads, _, logits, tracked = self.great_gradients(x, y)
        return student_grads, logits, tracked

    def train_step(self, data):
        x, y = self.unpack(data)
        student_grads, disc_grads, logits, tracked = self.great_gradients(x, y)
        self.discriminator_optimizer.apply(disc_grads, self.discriminator.trainable_variables)
        self.optimizer.apply(student_grads, self.student.trainable_variables)
        self.update_metrics(y, logits, tracked)
        return self.logs()

    def discriminator_accuracy(self, x, y):
        """(accuracy on teacher gradients, on student gradients) in percent, in inference mode."""
        g_t, g_s = self.gradient_pair(x, y)
        d_teacher, d_student = self.discriminate(g_t, g_s, training=False)
        return (100.0 * tf.reduce_mean(tf.cast(d_teacher > 0, tf.float32)),
                100.0 * tf.reduce_mean(tf.cast(d_student < 0, tf.float32)))
