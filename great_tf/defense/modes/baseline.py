"""Baseline: plain cross-entropy training of the main network (Table 1's first row)."""

import tensorflow as tf

from great_tf.defense.base import DefenseMode
from great_tf.distribute import global_batch_size
from great_tf.losses import replica_mean, sparse_ce
from great_tf.precision import loss_scale, scale


class Baseline(DefenseMode):
    name = "baseline"

    def gradients(self, model, x, y):
        variables = model.main.trainable_variables
        with tf.GradientTape() as tape:
            logits = model.main(x, training=True)
            ce = sparse_ce(y, logits)
            total = scale(replica_mean(ce, global_batch_size(x, ce.dtype)), loss_scale(model.optimizer))
        return tape.gradient(total, variables), {}, logits, ce
