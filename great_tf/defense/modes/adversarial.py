"""FGSM adversarial training (Goodfellow et al. 2015), as the paper's supplement runs it."""

import keras
import tensorflow as tf

from great_tf.defense.base import DefenseMode
from great_tf.distribute import global_batch_size
from great_tf.losses import sparse_ce
from great_tf.precision import loss_scale, scale


class AdversarialTraining(DefenseMode):
    """0.5 * (L_clean + L_adv) over one batch that holds every example clean and FGSM-perturbed
    (eps = `model.fgsm_eps`): clean and adversarial samples with equal probability (supplement).

    Clean and adversarial examples go through ONE training-mode forward (`[x; x_adv]`), so
    BatchNorm normalizes the clean examples during training with the statistics of the mixed batch,
    the same statistics its moving averages hold at test time. Two separate forwards (clean, then
    adversarial) normalize the clean examples with clean-only statistics during training but with
    the moving average of both at test time. On the CIFAR-10 subset at eps 0.2 that mismatch took
    clean test accuracy from about 60 % (training mode) to 14 % (docs/design.md#defense).

    The FGSM direction comes from an inference-mode forward, as a test-time attacker sees the
    network. It leaves the moving statistics alone, so those hold only the mixed batches.
    """

    name = "adversarial"

    def make_metrics(self):
        return [keras.metrics.Mean(name="adv_loss"),
                keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")]

    def fgsm_examples(self, model, x, y):
        """x + eps * sign(dCE/dx), clipped to the pixel range; the network in inference mode."""
        with tf.GradientTape() as input_tape:
            input_tape.watch(x)
            loss = scale(tf.reduce_sum(sparse_ce(y, model.main(x, training=False))),
                         loss_scale(model.optimizer))  # float16: no underflow before the sign
        x_adv = x + model.fgsm_eps * tf.sign(input_tape.gradient(loss, x))
        return tf.stop_gradient(tf.clip_by_value(x_adv, model.clip_min, model.clip_max))

    def adversarial_gradients(self, model, x, y):
        variables = model.main.trainable_variables
        batch = global_batch_size(x, x.dtype)
        x_adv = self.fgsm_examples(model, x, y)
        with tf.GradientTape() as tape:
            both = model.main(tf.concat([x, x_adv], axis=0), training=True)
            logits, adv_logits = tf.split(both, 2, axis=0)
            clean, adv = sparse_ce(y, logits), sparse_ce(y, adv_logits)
            total = scale(0.5 * (tf.reduce_sum(clean) + tf.reduce_sum(adv)) / batch,
                          loss_scale(model.optimizer))
        out = {"ce_per_example": clean, "logits": logits, "adv_per_example": adv, "adv_logits": adv_logits}
        return tape.gradient(total, variables), out

    def gradients(self, model, x, y):
        grads, out = self.adversarial_gradients(model, x, y)
        tracked = {"adv_loss": out["adv_per_example"], "adv_accuracy": (y, out["adv_logits"])}
        return grads, tracked, out["logits"], out["ce_per_example"]
