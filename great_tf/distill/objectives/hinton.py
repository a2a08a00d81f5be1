"""Hinton distillation (Hinton, Vinyals, Dean 2015)."""

import keras

from great_tf.distill.base import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, Distiller
from great_tf.distill.losses import hinton_kl, hinton_loss
from great_tf.errors import GreatError
from great_tf.losses import sparse_ce


class HintonDistiller(Distiller):
    """(1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)); the paper's grid-search
    optimum for CNN-5 + ResNet-18 is alpha 0.1, T 20 (dense) and alpha 0.99, T 20 (sparse)."""

    method = "distill"

    def __init__(self, teacher, student, alpha=DEFAULT_ALPHA["distill"],
                 temperature=DEFAULT_TEMPERATURE, **kwargs):
        super().__init__(teacher, student, **kwargs)
        if temperature <= 0:
            raise GreatError(f"the temperature must be positive, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.kl_tracker = self.track(keras.metrics.Mean(name="kl"))

    def objective(self, x, y, global_batch):
        teacher_logits = self.teacher(x, training=False)
        logits = self.student(x, training=True)
        per_example = hinton_loss(y, logits, teacher_logits, self.alpha, self.temperature)
        tracked = {self.loss_tracker: per_example, self.ce_tracker: sparse_ce(y, logits),
                   self.kl_tracker: hinton_kl(logits, teacher_logits, self.temperature)}
        return self.replica_loss(per_example, global_batch), logits, tracked
