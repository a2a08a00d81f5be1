"""Sobolev training (Czarnecki et al. 2017): the student's input gradient regressed on the
teacher's (docs/design.md#distillation)."""

import keras

from great_tf.distill.base import DEFAULT_ALPHA, Distiller
from great_tf.distill.losses import sobolev_distance
from great_tf.gradients import input_gradients
from great_tf.losses import sparse_ce


class SobolevStudent(Distiller):
    """(1 - alpha) * CE + alpha * ||g_s - g_t||^2 (double backprop through g_s).

    It matches the same CE input gradients the GREAT discriminator sees, with the squared L2
    distance summed over the input (per example); its alpha has no published value.
    """

    method = "sobolev"
    double_backprop = True

    def __init__(self, teacher, student, alpha=DEFAULT_ALPHA["sobolev"], **kwargs):
        super().__init__(teacher, student, **kwargs)
        self.alpha = float(alpha)
        self.sobolev_tracker = self.track(keras.metrics.Mean(name="sobolev"))

    def objective(self, x, y, global_batch):
        g_t = self.teacher_input_gradients(x, y)
        g_s, logits = input_gradients(self.student, x, y, training=True,
                                      loss_scale=self.input_gradient_scale())
        ce = sparse_ce(y, logits)
        distance = sobolev_distance(g_s, g_t)
        per_example = (1.0 - self.alpha) * ce + self.alpha * distance
        tracked = {self.loss_tracker: per_example, self.ce_tracker: ce,
                   self.sobolev_tracker: distance}
        return self.replica_loss(per_example, global_batch), logits, tracked
