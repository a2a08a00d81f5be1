"""The GREAT core: one model skeleton and one adversarial mechanism for all three uses.

The paper has one idea (docs/design.md#core): a gradient tensor computed during backprop is fed to
an auxiliary network that classifies it, and the auxiliary loss's gradient reaches whatever
produced that tensor *reversed*. `classify_gradients` is that mechanism, used by the defense
(auxiliary classifier of the masked input gradient, double backprop into the main network),
distillation (discriminator of student input gradients, double backprop into the student) and
multi-task learning (task classifier of GAL-scaled task gradients, first order into the GALs).
One backward pass over `task loss + auxiliary loss` then gives the auxiliary network its descent
direction and the producer its reversed one.

`GreatModel` is the `keras.Model` base that every trainable great_tf model extends. It owns what
they would otherwise each repeat: the named optimizers given to `compile` (with mixed-precision
loss scaling), the metric trackers behind `metrics`/`logs`, data unpacking and `test_step`. A
subclass declares which variables each optimizer trains (`optimizer_variables`) and writes its
`train_step`; `fit`, callbacks, TensorBoard, checkpoints and keras-tuner then work unchanged.

Saving: a wrapper is built at construction (its sub-networks are), so weights-only checkpoints and
`BackupAndRestore` work before it is ever called, and `get_config` saves the constructor's
arguments (sub-networks, numbers, schedules) read off the attributes of the same name, so a
`.keras` file reloads the whole wrapper, compiled with all its optimizers.
"""

import inspect

import keras
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.layers import reverse_gradient
from great_tf.precision import loss_scaled


def classify_gradients(auxiliary, gradient_tensor, alpha=1.0, training=True):
    """`auxiliary(gradient_tensor)` with the auxiliary loss's gradient reversed on its way back.

    Forward: the auxiliary network's output on the gradient tensor. Backward: the auxiliary
    network's own variables get the plain gradient of its loss (it learns to classify), and the
    gradient flowing back into `gradient_tensor` is multiplied by `-alpha`, so whatever produced
    the tensor ascends the auxiliary loss. If `gradient_tensor` was computed by a recorded inner
    tape (an input gradient), the reversed signal reaches the producing network's weights by
    double backprop; if it is `gamma * stop_gradient(g)` (multi-task GALs), it reaches only
    `gamma`: the first-order update of Algorithm 3.
    """
    return auxiliary(reverse_gradient(gradient_tensor, alpha), training=training)


class GreatModel(keras.Model):
    """Base of every great_tf training model.

    Subclasses:
    - set `self.network` (what `call` runs: the main network, the student, the multi-task net)
      or override `call`;
    - list their optimizers in `optimizer_variables()`: {compile argument: variables}; the
      main `optimizer` is always there, extra ones (`aux_optimizer`, `weight_optimizer`, ...) are
      keyword arguments of `compile` defaulting to Adam;
    - register metric trackers with `self.track(...)`; those named `train_*` or registered with
      `train_only=True` are left out of `evaluate`;
    - write `train_step` (and `evaluate_batch` for `test_step`);
    - keep every argument of `__init__` as an attribute of the same name (`get_config` saves
      them; sub-networks, numbers, strings, registered schedules and `Task`s serialize).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A saved wrapper names its class (great_tf>GreatMTL): `load_model` finds it registered.
        keras.saving.register_keras_serializable(package=cls.__module__.split(".")[0])(cls)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._trackers = {}
        self._train_only = set()
        # The sub-networks come built and the wrapper itself is never called by its train_step,
        # so Keras would never mark it built: weights-only checkpoints and BackupAndRestore
        # refuse an unbuilt model.
        self.built = True

    # -- metrics ---------------------------------------------------------------------------------
    def track(self, *metrics, train_only=False):
        """Registers metric trackers; returns the first (or the only) one for assignment."""
        for metric in metrics:
            self._trackers[metric.name] = metric
            if train_only:
                self._train_only.add(metric.name)
        return metrics[0] if len(metrics) == 1 else metrics

    @property
    def metrics(self):
        return list(getattr(self, "_trackers", {}).values())

    def logs(self, evaluation=False):
        return {name: m.result() for name, m in self._trackers.items()
                if not (evaluation and (name in self._train_only or name.startswith("train_")))}

    # -- data ------------------------------------------------------------------------------------
    def variable_dtype(self):
        """The dtype inputs are cast to: the trained network's variable dtype."""
        return self.network_variables[0].dtype if self.network_variables else self.compute_dtype

    def unpack(self, data):
        """(x, y) of a batch, x cast to the network's variable dtype (float64 NumPy batches mix
        with float32 models, and the other way round, without a dtype error)."""
        x, y = data[0], data[1]
        return tf.cast(x, self.variable_dtype()), y

    # -- structure -------------------------------------------------------------------------------
    def build(self, input_shape=None):
        pass  # every sub-network is built at construction, and so is the wrapper (`__init__`)

    @property
    def network_variables(self):
        """The variables the main `optimizer` trains."""
        return self.network.trainable_variables

    def optimizer_variables(self):
        """{compile argument: variables} of the extra optimizers (none by default)."""
        return {}

    # What to do instead of the `compile` arguments the step does not read (subclasses say).
    compile_instead = "the train_step computes its own losses and metrics: subclass and override train_step"

    def compile(self, optimizer="adam", **kwargs):
        """`optimizer` trains `network_variables`; each extra optimizer of
        `optimizer_variables()` is a keyword argument (Adam when not given).

        `loss`, `loss_weights`, `metrics` and `weighted_metrics` are refused: `train_step` never
        reads them (`compile_instead` says what does their work).
        """
        ignored = [k for k in ("loss", "loss_weights", "metrics", "weighted_metrics")
                   if kwargs.pop(k, None) is not None]
        if ignored:
            raise GreatError(f"{type(self).__name__}.compile does not use {', '.join(ignored)}: "
                             f"{self.compile_instead}")
        slots = self.optimizer_variables()
        extra = {name: kwargs.pop(name, None) for name in slots}
        unused = [k for k in kwargs if k.endswith("_optimizer")]
        unknown = [k for k in unused if kwargs.pop(k) is not None]
        if unknown:
            raise TypeError(f"{type(self).__name__}.compile got {', '.join(unknown)}; it takes "
                            f"optimizer and {', '.join(slots) or 'no other optimizer'}")
        super().compile(optimizer=loss_scaled(optimizer, self), **kwargs)
        self.optimizer.build(self.network_variables)
        for name, variables in slots.items():
            opt = None
            if variables:
                opt = loss_scaled(extra[name] or "adam", self)
                opt.build(variables)
            setattr(self, name, opt)

    # -- saving ----------------------------------------------------------------------------------
    def constructor_arguments(self):
        """{name: value} of every named argument of `__init__`, read off `self.<name>`."""
        parameters = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in parameters
                 if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        missing = [name for name in names if not hasattr(self, name)]
        if missing:
            raise GreatError(f"{type(self).__name__} cannot be saved: keep its constructor "
                             f"argument {missing[0]!r} as self.{missing[0]} (get_config saves "
                             f"every argument of __init__ from the attribute of the same name)")
        return {name: getattr(self, name) for name in names}

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype
        for name, value in self.constructor_arguments().items():
            try:
                config[name] = keras.saving.serialize_keras_object(value)
            except (TypeError, ValueError, NotImplementedError) as err:
                raise GreatError(
                    f"{type(self).__name__} cannot be saved: its {name} ({type(value).__name__}) "
                    f"is not serializable ({str(err).strip().splitlines()[0][:120]}); pass a "
                    f"number, a Keras model or a registered schedule such as "
                    f"great_tf.schedules.PolyRamp") from None
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**{name: keras.saving.deserialize_keras_object(value, custom_objects=custom_objects)
                      for name, value in config.items()})

    def get_compile_config(self):
        """Keras' compile configuration with every extra optimizer (`optimizer_variables`), so
        that a loaded `.keras` wrapper continues training on the same optimizers."""
        config = super().get_compile_config()
        if config:
            config.update({name: keras.saving.serialize_keras_object(getattr(self, name))
                           for name in self.optimizer_variables() if getattr(self, name, None)})
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**{name: value for name, value in config.items() if value is not None})

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate_batch(self, x, y):
        """Updates the evaluation metrics on one batch (subclasses)."""
        raise NotImplementedError

    def test_step(self, data):
        x, y = self.unpack(data)
        self.evaluate_batch(x, y)
        return self.logs(evaluation=True)
