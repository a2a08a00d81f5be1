"""FGSM adversarial training (Goodfellow et al. 2015), as the paper's supplement runs it."""

import keras
import tensorflow as tf

from great_tf.defense.base import DefenseMode
from great_tf.distribute import global_batch_size
from great_tf.losses import sparse_ce
from great_tf.precision import loss_scale, scale


class AdversarialTraining(DefenseMode):
    """0.5 * (L_clean + L_adv) from one clean and one FGSM batch (eps = `model.fgsm_eps`).

    Every example is seen clean and adversarial, i.e. both with equal probability (supplement).
    The FGSM direction comes from the same training-mode forward as L_clean; the sign makes the
    loss's scaling (sum or mean) irrelevant.
    """

    name = "adversarial"

    def make_metrics(self):
        return [keras.metrics.Mean(name="adv_loss"),
                keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")]

    def adversarial_gradients(self, model, x, y):
        variables = model.main.trainable_variables
        batch = global_batch_size(x, x.dtype)
        main_scale = loss_scale(model.optimizer)
        with tf.GradientTape() as tape:
            with tf.GradientTape() as input_tape:
                input_tape.watch(x)
                logits = model.main(x, training=True)
                clean = sparse_ce(y, logits)
                clean_sum = tf.reduce_sum(clean)
                scaled_clean_sum = scale(clean_sum, main_scale)  # float16: no underflow in the sign
            with tape.stop_recording():
                x_adv = x + model.fgsm_eps * tf.sign(input_tape.gradient(scaled_clean_sum, x))
                x_adv = tf.clip_by_value(x_adv, model.clip_min, model.clip_max)
            adv_logits = model.main(x_adv, training=True)
            adv = sparse_ce(y, adv_logits)
            total = scale(0.5 * (clean_sum + tf.reduce_sum(adv)) / batch, main_scale)
        out = {"ce_per_example": clean, "logits": logits, "adv_per_example": adv, "adv_logits": adv_logits}
        return tape.gradient(total, variables), out

    def gradients(self, model, x, y):
        grads, out = self.adversarial_gradients(model, x, y)
        tracked = {"adv_loss": out["adv_per_example"], "adv_accuracy": (y, out["adv_logits"])}
        return grads, tracked, out["logits"], out["ce_per_example"]
