"""The distiller every objective extends, the objective registry and the paper's optimiser.

A `Distiller(teacher, student, ...)` trains `student` (what `call` runs) against a frozen
`teacher`, the order of `keras.distillation.Distiller`. An objective is a
subclass in its own file under `great_tf/distill/objectives/` that sets `method` (that registers
it) and writes ONE hook, `objective(x, y, global_batch)`: this replica's share of the loss, the
student's logits and {metric tracker: per-example values}. Objectives with a network of their own
(GREAT's discriminator) list its variables in `optimizer_variables()` and override
`train_step` (docs/design.md#distillation).

The teacher runs in inference mode and none of its variables is ever given to an optimizer. Every
loss is a sum over the replica's examples divided by the global batch.
"""

import inspect

import keras
import tensorflow as tf

from great_tf.contracts import input_shape, require_logits
from great_tf.core import GreatModel
from great_tf.distribute import global_batch_size
from great_tf.errors import GreatError
from great_tf.gradients import input_gradients
from great_tf.losses import replica_mean, sparse_ce
from great_tf.models.normalization import check_exact_batch_norm
from great_tf.precision import loss_scale, scale
from great_tf.schedules import ScheduledFit, adam

DEFAULT_ALPHA = {"distill": 0.1, "sobolev": 0.1, "great": 0.1}
DEFAULT_TEMPERATURE = 20.0  # the paper's grid-search optimum for CNN-5 + ResNet-18
_REGISTRY = {}
_TABLE_ORDER = ("baseline", "distill", "sobolev", "great")


class Distiller(ScheduledFit, GreatModel):
    """The student trained on the labels alone; subclasses define `objective`.

    Arguments in `keras.distillation.Distiller`'s order, `(teacher, student, ...)`, or by
    keyword; `teacher` may be None for objectives without `needs_teacher` (the baseline:
    `CrossEntropyStudent(student=net)`). Teacher and student must output logits.
    """

    method = None
    needs_teacher = True
    double_backprop = False  # the objective differentiates the student's input gradient
    compile_instead = ("the loss is the objective's (build_distiller(method, ...) with alpha, "
                       "temperature) and it reports loss, ce and accuracy")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("method"):
            _REGISTRY[cls.method] = cls

    def __init__(self, teacher=None, student=None, **kwargs):
        super().__init__(**kwargs)
        check_pair(type(self).__name__, teacher, student, self.needs_teacher)
        self.student = self.network = student
        if self.double_backprop:
            check_exact_batch_norm(student, "the student", f"method {self.method!r}")
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False  # frozen: no trainable variable, inference-mode BN
        self.loss_tracker = self.track(keras.metrics.Mean(name="loss"))
        self.ce_tracker = self.track(keras.metrics.Mean(name="ce"))
        self.accuracy = self.track(keras.metrics.SparseCategoricalAccuracy(name="accuracy"))

    def call(self, x, training=False):
        return self.student(x, training=training)

    def variable_dtype(self):
        return self.student.dtype  # also for a frozen network, which has no trainable variable

    # -- the hook --------------------------------------------------------------------------------
    def objective(self, x, y, global_batch):
        """(the replica's share of the loss, student logits, {metric tracker: per-example values})."""
        raise NotImplementedError

    # -- steps -----------------------------------------------------------------------------------
    def student_gradients(self, x, y):
        """The gradient the optimizer applies to the student's variables (for tests), and logs."""
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            loss, logits, tracked = self.objective(x, y, global_batch_size(x, x.dtype))
            loss = scale(loss, loss_scale(getattr(self, "optimizer", None)))
        return tape.gradient(loss, variables), logits, tracked

    def train_step(self, data):
        x, y = self.unpack(data)
        grads, logits, tracked = self.student_gradients(x, y)
        self.optimizer.apply(grads, self.student.trainable_variables)
        self.update_metrics(y, logits, tracked)
        return self.logs()

    def update_metrics(self, y, logits, tracked):
        for tracker, values in tracked.items():
            tracker.update_state(values)
        self.accuracy.update_state(y, logits)

    def evaluate_batch(self, x, y):
        logits = self.student(x, training=False)
        ce = sparse_ce(y, logits)
        self.update_metrics(y, logits, {self.loss_tracker: ce, self.ce_tracker: ce})

    def logs(self, evaluation=False):
        if evaluation:  # the student's own loss, CE and accuracy, whatever the objective
            return {m.name: m.result() for m in (self.loss_tracker, self.ce_tracker, self.accuracy)}
        return super().logs()

    # -- input gradients -------------------------------------------------------------------------
    def input_gradient_scale(self):
        return loss_scale(getattr(self, "optimizer", None))

    def teacher_input_gradients(self, x, y):
        """g_t: the frozen teacher's per-example input gradient, a constant for the student."""
        g_t, _ = input_gradients(self.teacher, x, y, training=False,
                                 loss_scale=self.input_gradient_scale())
        return tf.stop_gradient(g_t)

    def gradient_pair(self, x, y):
        """(g_t, g_s) with everything in inference mode: for summaries, changes no state."""
        g_s = input_gradients(self.student, x, y, training=False,
                              loss_scale=self.input_gradient_scale())[0]
        return self.teacher_input_gradients(x, y), g_s

    @staticmethod
    def replica_loss(per_example, global_batch):
        return replica_mean(per_example, global_batch)


def check_pair(cls_name, teacher, student, needs_teacher):
    """One-line errors for a missing, repeated or probability-output teacher or student."""
    if student is None:
        raise GreatError(f"{cls_name} got no student: pass {cls_name}(teacher, student, ...) in "
                         f"keras.distillation.Distiller's order, or student=...")
    if teacher is None and needs_teacher:
        raise GreatError(f"{cls_name} needs a teacher: pass {cls_name}(teacher, student, ...) "
                         f"(a saved one: great_tf.distill.load_teacher(path))")
    if teacher is student:
        raise GreatError(f"{cls_name} got the same network as teacher and student: the teacher "
                         f"is frozen, so nothing would train; pass two networks")
    # Both read the same x: a subclassed network is probed on the other one's input shape.
    shape = next(filter(None, (input_shape(n) for n in (student, teacher) if n is not None)), None)
    for role, network in (("teacher", teacher), ("student", student)):
        if network is not None:
            require_logits(network, f"the {role}", shape)


def available_methods():
    from great_tf.distill import objectives  # noqa: F401 - importing registers every objective

    return tuple([m for m in _TABLE_ORDER if m in _REGISTRY] + sorted(set(_REGISTRY) - set(_TABLE_ORDER)))


def method_class(name):
    methods = available_methods()
    if name not in _REGISTRY:
        raise GreatError(f"unknown method {name!r}: choose one of {', '.join(methods)}")
    return _REGISTRY[name]


def build_distiller(method, teacher, student, discriminator=None, alpha=None, temperature=None):
    """The trainer of `student` for `method` (teacher first, as `keras.distillation.Distiller`;
    None for the baseline); alpha/temperature default to the paper's."""
    cls = method_class(method)
    accepted = inspect.signature(cls.__init__).parameters
    given = {"discriminator": discriminator, "alpha": alpha, "temperature": temperature}
    kwargs = {k: v for k, v in given.items() if k in accepted and v is not None}
    if "discriminator" in accepted and discriminator is None:
        raise GreatError(f"method {method!r} needs a discriminator over input gradients")
    return cls(teacher, student, name=f"distill_{method}", **kwargs)


def compile_distiller(model, steps_per_epoch=None, epochs=None, learning_rate=1e-3):
    """The supplement's CIFAR-10 optimiser, Adam 1e-3, for the student and (our choice: the paper
    names none) for every network of the objective. With `steps_per_epoch` and `epochs`, times the
    poly multiplier (0 after `epochs`: `fit` refuses to run past it); without, constant."""
    optimizers = {name: adam(learning_rate, steps_per_epoch, epochs)
                  for name in ("optimizer", *model.optimizer_variables())}
    model.compile(**optimizers)
    return model
