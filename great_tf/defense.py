"""Adversarial defense with GREAT and GREACE (Algorithm 1) and the paper's comparison methods.

`GreatDefense` wraps a classifier (the main network, logits out) and, for the GREAT modes, an
auxiliary classifier of the same architecture with LeakyReLU(0.2) that reads input gradients.
One training step of the full method ("great+ce"):

1. main forward `a = main(x)` (training mode), recorded by an inner tape watching `x`;
2. masked input gradient `g = (p_y - 1) * da_y/dx` per example (great_tf.gradients);
3. ONE auxiliary forward `á = aux(g)`; the auxiliary learns to classify `g` by `y`;
4. the main network receives `-alpha * dC'/dg` through `g` (double backprop), by a gradient
   reversal between `g` and the auxiliary network;
5. GREACE: the gradient at the main logits becomes `dC/da + beta * softmax(á) * 1[ŷ != y]`,
   through the surrogate `beta * sum_{j != y} stop_gradient(softmax(á)_j) * a_j`;
6. both networks are updated from one backward pass over `C + GREACE + reversed C'`.

Steps 3-6 use the auxiliary weights of the step's start for both the auxiliary update and the
reversed gradient (simultaneous updates, as a gradient-reversal layer does): Algorithm 1 lists the
auxiliary update first but evaluating the reversed gradient with the updated weights would need a
second auxiliary forward.

Every loss is a sum over the replica's examples divided by the global batch, so the step is
correct under any `tf.distribute` strategy; the input gradients come from summed losses and are
per-example quantities.
"""

import keras
import tensorflow as tf

from great_tf.distribute import global_batch_size
from great_tf.errors import GreatError
from great_tf.precision import full_precision, loss_scale, loss_scaled, rescale, scale
from great_tf.schedules import PolyRamp, poly_adam, scheduled_value

MODES = ("baseline", "adversarial", "greace", "great", "great+ce")
# Which of alpha (gradient reversal) and beta (GREACE) each mode uses.
USES_ALPHA = {"great", "great+ce"}
USES_BETA = {"greace", "great+ce"}
# The paper's beta_max per data set (Sec. 3.1); mnist is our choice (digits, like SVHN).
BETA_MAX = {"cifar10": 2.0, "svhn_cropped": 10.0, "mnist": 10.0}
ALPHA_MAX = 1.0
FGSM_TRAIN_EPS = 0.2  # the supplement's FGSM adversarial training, on the [0, 1] pixel scale


def sparse_ce(labels, logits):
    """Per-example cross-entropy with integer labels."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=full_precision(logits))


def greace_surrogate(labels, logits, aux_probs, beta):
    """Per-example `beta * sum_{j != y} stop_gradient(p´_j) * a_j`, p´ = softmax(á) the auxiliary
    network's probabilities (not its logits).

    Its gradient at the logits is `beta * softmax(á) * 1[ŷ != y]`, so `CE + greace_surrogate` has
    the gradient of Eq. 6; the auxiliary probabilities are constants (no gradient reaches the
    auxiliary network). Only its gradient matters: its value is not a loss to report.
    """
    logits = full_precision(logits)
    num_classes = tf.shape(logits)[-1]
    negatives = 1.0 - tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=logits.dtype)
    weights = tf.stop_gradient(tf.cast(aux_probs, logits.dtype)) * negatives
    beta = tf.cast(beta, logits.dtype) if tf.is_tensor(beta) else tf.constant(beta, logits.dtype)
    return beta * tf.reduce_sum(weights * logits, axis=-1)


def fgsm_direction(tape, loss, x):
    """sign(dloss/dx); the sign makes the loss's scaling (sum or mean) irrelevant."""
    return tf.sign(tape.gradient(loss, x))


class GreatDefense(keras.Model):
    """A classifier trained by one of MODES; `call` is the main network's logits.

    `alpha` and `beta` are floats or schedules of the main optimizer's step (`PolyRamp`); a mode
    ignores the one it does not use. `fgsm_eps`, `clip_min` and `clip_max` configure the
    "adversarial" mode's FGSM examples, in the model input's pixel scale.
    """

    def __init__(self, main, auxiliary=None, mode="great+ce", alpha=ALPHA_MAX, beta=BETA_MAX["cifar10"],
                 fgsm_eps=FGSM_TRAIN_EPS, clip_min=0.0, clip_max=1.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise GreatError(f"unknown defense mode {mode!r}: choose one of {', '.join(MODES)}")
        if self.needs_auxiliary(mode) and auxiliary is None:
            raise GreatError(f"mode {mode!r} needs an auxiliary network (main architecture, LeakyReLU)")
        self.mode = mode
        self.main = main
        self.auxiliary = auxiliary if self.needs_auxiliary(mode) else None
        self.alpha = alpha if mode in USES_ALPHA else 0.0
        self.beta = beta if mode in USES_BETA else 0.0
        self.fgsm_eps = float(fgsm_eps)
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.extra = {}
        if self.auxiliary is not None:
            self.extra = {
                "aux_loss": keras.metrics.Mean(name="aux_loss"),
                "aux_accuracy": keras.metrics.SparseCategoricalAccuracy(name="aux_accuracy"),
                "alpha": keras.metrics.Mean(name="alpha"),
                "beta": keras.metrics.Mean(name="beta"),
            }
        if mode == "adversarial":
            self.extra = {
                "adv_loss": keras.metrics.Mean(name="adv_loss"),
                "adv_accuracy": keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy"),
            }

    @staticmethod
    def needs_auxiliary(mode):
        return mode in USES_ALPHA or mode in USES_BETA

    # -- forward ------------------------------------------------------------------------------
    def build(self, input_shape=None):
        pass  # both networks are built at construction

    def call(self, x, training=False):
        return self.main(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy, *self.extra.values()]

    def logs(self):
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self.main(x, training=False)
        self.loss_tracker.update_state(sparse_ce(y, logits))
        self.accuracy.update_state(y, logits)
        return {m.name: m.result() for m in (self.loss_tracker, self.accuracy)}

    # -- schedules ----------------------------------------------------------------------------
    def current_alpha(self):
        return scheduled_value(self.alpha, self.optimizer.iterations)

    def current_beta(self):
        return scheduled_value(self.beta, self.optimizer.iterations)

    # -- training -----------------------------------------------------------------------------
    def compile(self, optimizer="adam", aux_optimizer=None, **kwargs):
        """`aux_optimizer` trains the auxiliary network (Adam by default, as in the paper)."""
        super().compile(optimizer=loss_scaled(optimizer, self), **kwargs)
        self.optimizer.build(self.main.trainable_variables)
        self.aux_optimizer = None
        if self.auxiliary is not None:
            self.aux_optimizer = loss_scaled(aux_optimizer or "adam", self)
            self.aux_optimizer.build(self.auxiliary.trainable_variables)

    def great_losses(self, x, y, alpha, beta, aux_probs=None, reverse=True, input_scale=None):
        """The replica's losses of one GREAT/GREACE step, differentiable w.r.t. both networks.

        Returns a dict: `ce`, `greace`, `aux` (replica shares of the global-batch mean), the
        `logits`, `aux_logits` and the masked input gradient `g`. With `reverse`, `aux` reaches the
        main network through a gradient reversal of strength alpha, so that the gradient of
        `ce + greace + aux` is the main network's step direction AND the auxiliary's. Without it,
        `ce + greace - alpha * aux` is a plain scalar whose gradient w.r.t. the main weights is the
        same (for finite-difference checks, with `aux_probs` freezing GREACE's constants).
        `input_scale` scales the inner backward pass that computes `g` (mixed precision).
        """
        from great_tf.gradients import masked_input_gradients
        from great_tf.layers import reverse_gradient

        batch = global_batch_size(x, x.dtype)
        g, logits = masked_input_gradients(self.main, x, y, training=True, loss_scale=input_scale)
        if self.mode not in USES_ALPHA:
            g = tf.stop_gradient(g)  # GREACE alone: no double backprop needed
        aux_input = reverse_gradient(g, alpha) if reverse else g
        aux_logits = self.auxiliary(aux_input, training=True)
        aux_per_example = sparse_ce(y, aux_logits)
        aux = tf.reduce_sum(aux_per_example) / batch
        ce_per_example = sparse_ce(y, logits)
        out = {"ce_per_example": ce_per_example, "aux_per_example": aux_per_example,
               "ce": tf.reduce_sum(ce_per_example) / batch, "aux": aux if reverse else -alpha * aux,
               "logits": logits, "aux_logits": aux_logits, "g": g}
        out["greace"] = tf.zeros([], x.dtype)
        if self.mode in USES_BETA:
            probs = tf.nn.softmax(full_precision(aux_logits)) if aux_probs is None else aux_probs
            out["greace"] = tf.reduce_sum(greace_surrogate(y, logits, probs, beta)) / batch
        return out

    def great_gradients(self, x, y):
        """(main gradients, auxiliary gradients, losses dict) of one GREAT/GREACE step.

        Under mixed precision the one backward pass is scaled by the main optimizer's loss scale
        (the inner one that computes g too); the auxiliary gradients are rescaled to the auxiliary
        optimizer's scale. Each optimizer's `apply` undoes its own.
        """
        dtype = self.main.trainable_variables[0].dtype
        x = tf.cast(x, dtype)
        alpha = tf.cast(self.current_alpha(), dtype)
        beta = tf.cast(self.current_beta(), dtype)
        main_vars = self.main.trainable_variables
        aux_vars = self.auxiliary.trainable_variables
        main_scale = loss_scale(self.optimizer)
        with tf.GradientTape() as tape:
            out = self.great_losses(x, y, alpha, beta, input_scale=main_scale)
            total = scale(out["ce"] + out["greace"] + out["aux"], main_scale)
        grads = tape.gradient(total, main_vars + aux_vars)
        out.update(alpha=alpha, beta=beta)
        aux_grads = rescale(grads[len(main_vars):], main_scale, loss_scale(self.aux_optimizer))
        return grads[: len(main_vars)], aux_grads, out

    def adversarial_gradients(self, x, y):
        """FGSM adversarial training: 0.5 * (L_clean + L_adv) from one clean and one FGSM batch.

        Every example is seen clean and adversarial, i.e. both with equal probability (supplement).
        The FGSM direction comes from the same training-mode forward as L_clean.
        """
        main_vars = self.main.trainable_variables
        batch = global_batch_size(x, x.dtype)
        main_scale = loss_scale(self.optimizer)
        with tf.GradientTape() as tape:
            with tf.GradientTape() as input_tape:
                input_tape.watch(x)
                logits = self.main(x, training=True)
                clean = sparse_ce(y, logits)
                clean_sum = tf.reduce_sum(clean)
                scaled_clean_sum = scale(clean_sum, main_scale)  # float16: no underflow in the sign
            with tape.stop_recording():
                x_adv = x + self.fgsm_eps * fgsm_direction(input_tape, scaled_clean_sum, x)
                x_adv = tf.clip_by_value(x_adv, self.clip_min, self.clip_max)
            adv_logits = self.main(x_adv, training=True)
            adv = sparse_ce(y, adv_logits)
            total = scale(0.5 * (clean_sum + tf.reduce_sum(adv)) / batch, main_scale)
        out = {"ce_per_example": clean, "logits": logits, "adv_per_example": adv, "adv_logits": adv_logits}
        return tape.gradient(total, main_vars), out

    def baseline_gradients(self, x, y):
        main_vars = self.main.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.main(x, training=True)
            per_example = sparse_ce(y, logits)
            total = tf.reduce_sum(per_example) / global_batch_size(x, x.dtype)
            total = scale(total, loss_scale(self.optimizer))
        return tape.gradient(total, main_vars), {"ce_per_example": per_example, "logits": logits}

    def train_step(self, data):
        x, y = data[0], data[1]
        x = tf.convert_to_tensor(x)
        main_vars = self.main.trainable_variables
        if self.auxiliary is not None:
            main_grads, aux_grads, out = self.great_gradients(x, y)
            self.aux_optimizer.apply(aux_grads, self.auxiliary.trainable_variables)
            self.extra["aux_loss"].update_state(out["aux_per_example"])
            self.extra["aux_accuracy"].update_state(y, out["aux_logits"])
            self.extra["alpha"].update_state(out["alpha"])
            self.extra["beta"].update_state(out["beta"])
        elif self.mode == "adversarial":
            main_grads, out = self.adversarial_gradients(x, y)
            self.extra["adv_loss"].update_state(out["adv_per_example"])
            self.extra["adv_accuracy"].update_state(y, out["adv_logits"])
        else:
            main_grads, out = self.baseline_gradients(x, y)
        self.optimizer.apply(main_grads, main_vars)
        self.loss_tracker.update_state(out["ce_per_example"])
        self.accuracy.update_state(y, out["logits"])
        return self.logs()


def build_networks(input_shape, num_classes, width=64):
    """The paper's pair: ResNet-18 main network, ResNet-18 with LeakyReLU(0.2) auxiliary.

    The auxiliary reads input gradients, which have the input's shape.
    """
    from great_tf.models import resnet18

    main = resnet18(input_shape, num_classes, width, act="relu", name="main")
    aux = resnet18(input_shape, num_classes, width, act="leaky_relu", name="auxiliary")
    return main, aux


def build_defense(mode, input_shape, num_classes, width=64, steps_per_epoch=1, epochs=1,
                  alpha_max=ALPHA_MAX, beta_max=BETA_MAX["cifar10"], learning_rate=1e-3,
                  fgsm_eps=FGSM_TRAIN_EPS, clip_min=0.0, clip_max=1.0):
    """A compiled `GreatDefense` with the paper's settings: Adam 1e-3 with the poly multiplier for
    both networks, alpha = alpha_max * (1 - lr), beta = beta_max * (1 - lr).

    Build it inside `strategy.scope()` to train under a distribution strategy.
    """
    if mode not in MODES:
        raise GreatError(f"unknown defense mode {mode!r}: choose one of {', '.join(MODES)}")
    main, aux = build_networks(input_shape, num_classes, width)
    model = GreatDefense(
        main, aux if GreatDefense.needs_auxiliary(mode) else None, mode,
        alpha=PolyRamp(alpha_max, steps_per_epoch, epochs),
        beta=PolyRamp(beta_max, steps_per_epoch, epochs),
        fgsm_eps=fgsm_eps, clip_min=clip_min, clip_max=clip_max, name=f"defense_{mode.replace('+', '_')}")
    extra = {}
    if model.auxiliary is not None:
        extra["aux_optimizer"] = poly_adam(learning_rate, steps_per_epoch, epochs)
    model.compile(optimizer=poly_adam(learning_rate, steps_per_epoch, epochs), **extra)
    return model
