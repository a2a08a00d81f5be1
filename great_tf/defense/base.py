"""The defense model and its mode plug-ins (docs/design.md#defense).

`GreatDefense` holds the main network (`call` is its logits) and, for the modes that need one, an
auxiliary network over input gradients. What a training step computes is the mode's: a
`DefenseMode` subclass in its own file under `great_tf/defense/modes/`, registered by its `name`.
A mode declares whether it needs the auxiliary network and which of alpha (gradient reversal)
and beta (GREACE) it uses, the metrics it reports, and `gradients(model, x, y)`.
"""

import keras
import tensorflow as tf

from great_tf.core import GreatModel
from great_tf.errors import GreatError
from great_tf.losses import sparse_ce
from great_tf.models.normalization import check_exact_batch_norm
from great_tf.schedules import ScheduledFit, scheduled_value

_MODES = {}
# The paper's Table 1 order; modes added later follow, sorted.
_TABLE_ORDER = ("baseline", "adversarial", "greace", "great", "great+ce")


class DefenseMode:
    """One way of training the main network. Subclasses set `name` and write `gradients`."""

    name = None
    needs_auxiliary = False
    uses_alpha = False
    uses_beta = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            _MODES[cls.name] = cls

    def make_metrics(self):
        """The mode's own training metrics (the model adds loss and accuracy)."""
        return []

    def gradients(self, model, x, y):
        """(main-network gradients, {metric name: values for update_state}, logits, per-example
        CE). May apply the auxiliary optimizer itself."""
        raise NotImplementedError


def _load_modes():
    from great_tf.defense import modes  # noqa: F401 - importing the package registers them


def available_modes():
    _load_modes()
    return tuple([m for m in _TABLE_ORDER if m in _MODES] + sorted(set(_MODES) - set(_TABLE_ORDER)))


def mode_class(name):
    _load_modes()
    if name not in _MODES:
        raise GreatError(f"unknown defense mode {name!r}: choose one of {', '.join(available_modes())}")
    return _MODES[name]


def output_units(network):
    """The size of a network's last output axis, or None where Keras does not know it yet."""
    outputs = getattr(network, "outputs", None)
    return outputs[0].shape[-1] if outputs else None


def check_auxiliary_outputs(main, auxiliary):
    """The auxiliary network classifies input gradients by their class: one logit per class."""
    classes, units = output_units(main), output_units(auxiliary)
    if classes is not None and units is not None and units != classes:
        raise GreatError(f"the auxiliary network {auxiliary.name!r} has {units} outputs: it needs "
                         f"one logit per class, {classes} like the main network {main.name!r}")


class GreatDefense(ScheduledFit, GreatModel):
    """A classifier trained by `mode`; `call` is the main network's logits.

    `alpha` and `beta` are floats or schedules of the main optimizer's step (`PolyRamp`); a mode
    ignores the one it does not use. `fgsm_eps`, `clip_min` and `clip_max` configure the
    "adversarial" mode's FGSM examples, in the model input's pixel scale. Optimizers:
    `compile(optimizer=..., aux_optimizer=...)` (the auxiliary one only where there is one).

    `main` gives logits; `auxiliary` reads tensors of the input's shape and gives one logit per
    class. Under the modes with alpha (great, great+ce) `main` sits under a double backprop: its
    BatchNorm layers must be `great_tf.models.ExactBatchNorm` (checked here).
    """

    compile_instead = ("the losses are the mode's (GreatDefense(mode=...), alpha, beta) and it "
                       "reports loss, accuracy and the mode's metrics; measure others with "
                       "model.predict or great_tf.attacks")

    def __init__(self, main, auxiliary=None, mode="great+ce", alpha=1.0, beta=2.0,
                 fgsm_eps=0.2, clip_min=0.0, clip_max=1.0, **kwargs):
        super().__init__(**kwargs)
        self.defense_mode = mode_class(mode)()
        if self.defense_mode.needs_auxiliary and auxiliary is None:
            raise GreatError(f"mode {mode!r} needs an auxiliary network (main architecture, LeakyReLU)")
        self.mode = mode
        self.main = self.network = main
        self.auxiliary = auxiliary if self.defense_mode.needs_auxiliary else None
        if self.defense_mode.uses_alpha:  # the reversed gradient reaches main by double backprop
            check_exact_batch_norm(main, "the main network", f"mode {mode!r}")
        if self.auxiliary is not None:
            check_auxiliary_outputs(main, self.auxiliary)
        self.alpha = alpha if self.defense_mode.uses_alpha else 0.0
        self.beta = beta if self.defense_mode.uses_beta else 0.0
        self.fgsm_eps = float(fgsm_eps)
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.track(keras.metrics.Mean(name="loss"),
                   keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
        self.mode_metrics = {m.name: m for m in self.defense_mode.make_metrics()}
        for metric in self.mode_metrics.values():
            self.track(metric, train_only=True)

    @staticmethod
    def needs_auxiliary(mode):
        return mode_class(mode).needs_auxiliary

    def call(self, x, training=False):
        return self.main(x, training=training)

    def optimizer_variables(self):
        if self.auxiliary is None:
            return {}
        return {"aux_optimizer": self.auxiliary.trainable_variables}

    def current_alpha(self, dtype=tf.float32):
        return scheduled_value(self.alpha, self.optimizer.iterations, dtype)

    def current_beta(self, dtype=tf.float32):
        return scheduled_value(self.beta, self.optimizer.iterations, dtype)

    def evaluate_batch(self, x, y):
        logits = self.main(x, training=False)
        self._trackers["loss"].update_state(sparse_ce(y, logits))
        self._trackers["accuracy"].update_state(y, logits)

    def train_step(self, data):
        x, y = self.unpack(data)
        grads, tracked, logits, ce = self.defense_mode.gradients(self, x, y)
        self.optimizer.apply(grads, self.main.trainable_variables)
        self._trackers["loss"].update_state(ce)
        self._trackers["accuracy"].update_state(y, logits)
        for name, values in tracked.items():
            metric = self.mode_metrics[name]
            if isinstance(values, tuple):
                metric.update_state(*values)
            else:
                metric.update_state(values)
        return self.logs()

    # Kept for tests and users who call the steps' pieces directly.
    def great_losses(self, *args, **kwargs):
        return self.defense_mode.losses(self, *args, **kwargs)

    def great_gradients(self, x, y):
        return self.defense_mode.great_gradients(self, x, y)

    def adversarial_gradients(self, x, y):
        return self.defense_mode.adversarial_gradients(self, x, y)
