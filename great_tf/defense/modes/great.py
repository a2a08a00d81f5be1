"""GREAT, GREACE and GRE(AT+CE): the auxiliary network over the masked input gradient
(Algorithm 1; docs/design.md#defense).

One training step of the full method ("great+ce"):
1. main forward `a = main(x)` (training mode), recorded by an inner tape watching `x`;
2. masked input gradient `g = (p_y - 1) * da_y/dx` per example (great_tf.gradients);
3. ONE auxiliary forward `á = aux(g)` through `classify_gradients`: the auxiliary learns to
   classify `g` by `y`, and the main network receives `-alpha * dC'/dg` through `g` (double
   backprop);
4. GREACE: the gradient at the main logits becomes `dC/da + beta * softmax(á) * 1[ŷ != y]`,
   through the surrogate `beta * sum_{j != y} stop_gradient(softmax(á)_j) * a_j`;
5. both networks are updated from one backward pass over `C + GREACE + C'`.

Steps 3-5 use the auxiliary weights of the step's start for both the auxiliary update and the
reversed gradient (simultaneous updates, as a gradient-reversal layer does): Algorithm 1 lists the
auxiliary update first, but evaluating the reversed gradient with the updated weights would need a
second auxiliary forward. GREACE alone (alpha = 0) holds `g` constant: no double backprop.
"""

import keras
import tensorflow as tf

from great_tf.core import classify_gradients
from great_tf.defense.base import DefenseMode
from great_tf.defense.greace import greace_surrogate
from great_tf.distribute import global_batch_size
from great_tf.gradients import masked_input_gradients
from great_tf.losses import replica_mean, sparse_ce
from great_tf.precision import full_precision, loss_scale, rescale, scale


class GreatCE(DefenseMode):
    """GRE(AT+CE): gradient reversal (alpha) and GREACE (beta) together."""

    name = "great+ce"
    needs_auxiliary = True
    uses_alpha = True
    uses_beta = True

    def make_metrics(self):
        return [keras.metrics.Mean(name="aux_loss"),
                keras.metrics.SparseCategoricalAccuracy(name="aux_accuracy"),
                keras.metrics.Mean(name="alpha"), keras.metrics.Mean(name="beta")]

    def losses(self, model, x, y, alpha, beta, aux_probs=None, reverse=True, input_scale=None):
        """The replica's losses of one step, differentiable w.r.t. both networks.

        Returns a dict: `ce`, `greace`, `aux` (replica shares of the global-batch mean), the
        `logits`, `aux_logits` and the masked input gradient `g`. With `reverse`, `aux` reaches
        the main network reversed (strength alpha), so the gradient of `ce + greace + aux` is the
        main network's step direction AND the auxiliary's. Without it, `ce + greace - alpha * aux`
        is a plain scalar whose gradient w.r.t. the main weights is the same (for finite-difference
        checks, with `aux_probs` freezing GREACE's constants). `input_scale` scales the inner
        backward pass that computes `g` (mixed precision).
        """
        batch = global_batch_size(x, x.dtype)
        g, logits = masked_input_gradients(model.main, x, y, training=True, loss_scale=input_scale)
        if not self.uses_alpha:
            g = tf.stop_gradient(g)  # GREACE alone: no double backprop needed
        if reverse:
            aux_logits = classify_gradients(model.auxiliary, g, alpha)
        else:
            aux_logits = model.auxiliary(g, training=True)
        aux_per_example = sparse_ce(y, aux_logits)
        aux = replica_mean(aux_per_example, batch)
        ce_per_example = sparse_ce(y, logits)
        out = {"ce_per_example": ce_per_example, "aux_per_example": aux_per_example,
               "ce": replica_mean(ce_per_example, batch), "aux": aux if reverse else -alpha * aux,
               "logits": logits, "aux_logits": aux_logits, "g": g, "greace": tf.zeros([], x.dtype)}
        if self.uses_beta:
            probs = tf.nn.softmax(full_precision(aux_logits)) if aux_probs is None else aux_probs
            out["greace"] = replica_mean(greace_surrogate(y, logits, probs, beta), batch)
        return out

    def great_gradients(self, model, x, y):
        """(main gradients, auxiliary gradients, losses dict) of one step.

        Under mixed precision the one backward pass is scaled by the main optimizer's loss scale
        (the inner one that computes g too); the auxiliary gradients are rescaled to the
        auxiliary optimizer's scale. Each optimizer's `apply` undoes its own.
        """
        dtype = model.main.trainable_variables[0].dtype
        x = tf.cast(x, dtype)
        alpha, beta = model.current_alpha(dtype), model.current_beta(dtype)
        main_vars = model.main.trainable_variables
        aux_vars = model.auxiliary.trainable_variables
        main_scale = loss_scale(model.optimizer)
        with tf.GradientTape() as tape:
            out = self.losses(model, x, y, alpha, beta, input_scale=main_scale)
            total = scale(out["ce"] + out["greace"] + out["aux"], main_scale)
        grads = tape.gradient(total, main_vars + aux_vars)
        out.update(alpha=alpha, beta=beta)
        aux_grads = rescale(grads[len(main_vars):], main_scale, loss_scale(model.aux_optimizer))
        return grads[: len(main_vars)], aux_grads, out

    def gradients(self, model, x, y):
        main_grads, aux_grads, out = self.great_gradients(model, x, y)
        model.aux_optimizer.apply(aux_grads, model.auxiliary.trainable_variables)
        tracked = {"aux_loss": out["aux_per_example"], "aux_accuracy": (y, out["aux_logits"]),
                   "alpha": out["alpha"], "beta": out["beta"]}
        return main_grads, tracked, out["logits"], out["ce_per_example"]


class Great(GreatCE):
    """GREAT alone: the reversed auxiliary gradient, no GREACE (beta = 0)."""

    name = "great"
    uses_beta = False


class Greace(GreatCE):
    """GREACE alone (Eq. 6): the auxiliary network's confusions sharpen the cross-entropy;
    no gradient reversal (alpha = 0), so no double backprop."""

    name = "greace"
    uses_alpha = False
