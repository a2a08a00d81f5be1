"""The baseline student: cross-entropy on the labels alone."""

from great_tf.distill.base import Distiller
from great_tf.losses import sparse_ce


class CrossEntropyStudent(Distiller):
    """The student alone (no teacher needed)."""

    method = "baseline"
    needs_teacher = False

    def objective(self, x, y, global_batch):
        logits = self.student(x, training=True)
        ce = sparse_ce(y, logits)
        return self.replica_loss(ce, global_batch), logits, {self.loss_tracker: ce, self.ce_tracker: ce}
