"""Equal weights: every task's loss with weight 1 (the paper's first baseline)."""

from great_tf.mtl.base import MultiTaskModel


class EqualWeightsMTL(MultiTaskModel):
    """sum_i L_i: the base step, registered under its name."""

    method = "equal"
