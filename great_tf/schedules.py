"""The paper's learning-rate policy: a multiplier (1 - e/e_max)^0.9 applied per epoch.

The same multiplier drives the learning rate (`PolyDecay`) and the auxiliary weights alpha and
beta (`PolyRamp`). A schedule is evaluated in the dtype it is read in (`scheduled_value(value,
step, dtype)`), so a float64 model gets alpha = 0.7 * (1 - m) computed in float64 rather than a
float32 value widened afterwards (0.699999988...). See docs/design.md#core.
"""

import inspect
import warnings

import keras
import tensorflow as tf

from great_tf.errors import GreatError


def computation_dtype(dtype):
    """The dtype a schedule computes in to be returned in `dtype`: float64 stays float64, every
    narrower float (float16, bfloat16, float32) computes in float32 and is cast down at the end,
    because (1 - e/e_max)^0.9 in float16 would lose most of its digits."""
    dtype = tf.as_dtype(dtype)
    return tf.float64 if dtype == tf.float64 else tf.float32


def poly_multiplier(epoch, epochs, power=0.9, dtype=tf.float32):
    """(1 - epoch/epochs)^power in `dtype`: 1 at the first epoch, (1/epochs)^power at the last."""
    epoch = tf.cast(epoch, dtype)
    one = tf.constant(1.0, dtype)
    return tf.pow(tf.maximum(one - epoch / tf.constant(float(epochs), dtype), 0.0), tf.constant(power, dtype))


class EpochPolySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Base of the per-epoch poly schedules: reads the epoch off an optimizer step counter.

    Being a function of the step, a schedule is checkpointed with the optimizer's step counter, so
    a resumed run continues on the same value without a callback. Subclasses define `value(epoch,
    dtype)`; every constructor argument is kept as an attribute of the same name, which is what
    the shared `get_config` returns.
    """

    def __init__(self, steps_per_epoch, epochs, power=0.9):
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.power = float(power)

    @property
    def end_step(self):
        """The first optimizer step past the schedule: epoch `epochs`, where the multiplier is 0."""
        return self.steps_per_epoch * self.epochs

    def epoch(self, step):
        return tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)

    def multiplier(self, step, dtype=tf.float32):
        return poly_multiplier(self.epoch(step), self.epochs, self.power, dtype)

    def __call__(self, step, dtype=tf.float32):
        """The value at optimizer step `step`, computed and returned in `dtype` (float32 by
        default, which is what a Keras optimizer calling its learning-rate schedule gets)."""
        dtype = tf.as_dtype(dtype)
        return tf.cast(self.value(step, computation_dtype(dtype)), dtype)

    def value(self, step, dtype):
        raise NotImplementedError

    def get_config(self):
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}


@keras.saving.register_keras_serializable(package="great_tf")
class PolyDecay(EpochPolySchedule):
    """`initial_learning_rate * poly_multiplier(epoch)`: the paper's learning rate."""

    def __init__(self, initial_learning_rate, steps_per_epoch, epochs, power=0.9):
        super().__init__(steps_per_epoch, epochs, power)
        self.initial_learning_rate = float(initial_learning_rate)

    def value(self, step, dtype):
        return tf.constant(self.initial_learning_rate, dtype) * self.multiplier(step, dtype)


def poly_adam(learning_rate, steps_per_epoch, epochs, power=0.9):
    """Adam with the paper's poly schedule (every GREAT experiment's default optimizer)."""
    return keras.optimizers.Adam(PolyDecay(learning_rate, steps_per_epoch, epochs, power))


@keras.saving.register_keras_serializable(package="great_tf")
class PolyRamp(EpochPolySchedule):
    """`max_value * (1 - poly_multiplier(epoch))`: the paper's alpha and beta policy (supplement).

    Zero during the first epoch and growing towards `max_value` as the learning-rate multiplier
    decays, so the auxiliary terms do not impede the main task early on. Any callable of the step
    (or a float) may replace it.
    """

    def __init__(self, max_value, steps_per_epoch, epochs, power=0.9):
        super().__init__(steps_per_epoch, epochs, power)
        self.max_value = float(max_value)

    def value(self, step, dtype):
        return tf.constant(self.max_value, dtype) * (1.0 - self.multiplier(step, dtype))


def scheduled_value(value, step, dtype=tf.float32):
    """A float, or a schedule called with the optimizer's step, as a tensor of `dtype`.

    A float becomes a constant of `dtype` directly; our schedules (`EpochPolySchedule`) compute in
    `dtype` (float32 for the narrower floats). Any other callable of the step is cast to `dtype`,
    so it carries only the precision it computed in.
    """
    dtype = tf.as_dtype(dtype)
    if isinstance(value, EpochPolySchedule):
        return value(step, dtype)
    if callable(value):
        return tf.cast(value(step), dtype)
    return tf.constant(float(value), dtype)


def paper_schedules(steps_per_epoch, epochs):
    """Whether a builder should use the paper's poly schedules: both `steps_per_epoch` and `epochs`
    given (True) or neither (False: constant rates); one without the other is refused."""
    if (steps_per_epoch is None) != (epochs is None):
        raise GreatError("give both steps_per_epoch and epochs (the poly schedules' length) or "
                         "neither (a constant learning rate and constant alpha and beta)")
    return steps_per_epoch is not None


def adam(learning_rate, steps_per_epoch=None, epochs=None):
    """`poly_adam` when the schedule's length is given, else Adam at a constant `learning_rate`."""
    if paper_schedules(steps_per_epoch, epochs):
        return poly_adam(learning_rate, steps_per_epoch, epochs)
    return keras.optimizers.Adam(learning_rate)


# -- checks when fit starts ------------------------------------------------------------------------

def learning_rate_schedule(optimizer):
    """The learning-rate schedule of `optimizer` (through a loss-scale wrapper), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) else None


class ScheduleCheck(keras.callbacks.Callback):
    """At the start of `fit`: refuses a run that would go past the end of a `PolyDecay` learning
    rate (the rate is 0 there, so those steps would train nothing), and warns when a `PolyRamp`
    weight stays 0 through the whole run (such a run is the baseline).

    `schedules()` of the model gives {what: schedule}. With an unknown number of steps per epoch
    (a data set of unknown size) the decay is checked at each epoch's start instead.
    """

    def __init__(self, epochs, initial_epoch):
        super().__init__()
        self.epochs, self.initial_epoch = int(epochs), int(initial_epoch)

    def on_train_begin(self, logs=None):
        steps = self.params.get("steps")
        if not steps:
            return
        initial_epoch = getattr(self.model, "_initial_epoch", None) or self.initial_epoch  # BackupAndRestore
        start = int(self.model.optimizer.iterations.numpy())
        end = start + max(self.epochs - initial_epoch, 0) * int(steps)
        for what, schedule in self.model.schedules().items():
            if isinstance(schedule, PolyDecay) and end > schedule.end_step:
                raise GreatError(
                    f"this fit runs to optimizer step {end} but the {what} schedule (PolyDecay over "
                    f"{schedule.epochs} epochs of {schedule.steps_per_epoch} steps) is 0 from step "
                    f"{schedule.end_step} on: build the schedule for the steps you fit, or fit fewer epochs")
            if isinstance(schedule, PolyRamp) and schedule.max_value and end <= schedule.steps_per_epoch:
                warnings.warn(
                    f"{what} is 0 through this whole fit (PolyRamp is 0 during its first epoch of "
                    f"{schedule.steps_per_epoch} steps, this fit ends at step {end}): the run trains "
                    f"like the baseline; fit more epochs or pass a constant {what}", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        if self.params.get("steps"):
            return
        step = int(self.model.optimizer.iterations.numpy())
        for what, schedule in self.model.schedules().items():
            if isinstance(schedule, PolyDecay) and step >= schedule.end_step:
                raise GreatError(
                    f"epoch {epoch} starts at optimizer step {step}, past the end of the {what} "
                    f"schedule (PolyDecay, 0 from step {schedule.end_step} on): build the schedule "
                    f"for the steps you fit, or fit fewer epochs")


class ScheduledFit:
    """Mixin of the great_tf models: `fit` runs `ScheduleCheck` and the model's own callbacks
    (`fit_callbacks()`, first, so that their state is updated before a checkpoint is written)."""

    def schedules(self):
        """{what: schedule}: every optimizer's learning rate and the weights `alpha`, `beta`."""
        found = {}
        for name in ("optimizer", *self.optimizer_variables()):
            schedule = learning_rate_schedule(getattr(self, name, None))
            if schedule is not None:
                found[f"{name} learning rate"] = schedule
        for name in ("alpha", "beta"):
            value = getattr(self, name, None)
            if isinstance(value, EpochPolySchedule):
                found[name] = value
        return found

    def fit_callbacks(self):
        """Callbacks the model needs in every `fit` (DWA: its epoch boundaries)."""
        return []

    def fit(self, *args, **kwargs):
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        check = ScheduleCheck(arguments["epochs"], arguments["initial_epoch"])
        arguments["callbacks"] = [*self.fit_callbacks(), *(arguments["callbacks"] or []), check]
        arguments.pop("self")
        return super().fit(**arguments)
