"""Knowledge distillation with GREAT (Algorithm 2) and the paper's baselines, on one student.

- `CrossEntropyStudent` ("baseline"): the student alone, cross-entropy on the labels.
- `HintonDistiller` ("distill", Hinton et al. 2015):
  (1 - alpha) * CE + alpha * T^2 * KL(softmax(t / T) || softmax(s / T)).
- `SobolevStudent` ("sobolev", Czarnecki et al. 2017): (1 - alpha) * CE + alpha * ||g_s - g_t||^2,
  the student's input gradient regressed directly on the teacher's.
- `GreatDistiller` ("great"): a binary discriminator f learns to tell the teacher's input
  gradients (label 1) from the student's (label 0); the student descends
  (1 - alpha) * CE - alpha * BCE(f(g_s), 0), i.e. it receives the reversed discriminator gradient
  -alpha * dBCE(f(g_s), 0)/dg_s through g_s by double backprop. alpha = 0.1 (the paper's value).

g_s and g_t are per-example input gradients of the cross-entropy on the labels,
`great_tf.gradients.input_gradients` (a summed loss, so they do not depend on the batch size or
the number of replicas). The teacher is frozen: it runs in inference mode and none of its
variables is ever given to an optimizer.

Choices where the paper is silent (README, "Reading the paper"):
- Algorithm 2 updates the discriminator (line 7) before it evaluates the reversed gradient (line 9);
  we take both from the same discriminator forward pass (simultaneous updates, as a gradient
  reversal layer in the paper's Fig. 1a gives), which saves one discriminator pass per step.
- The discriminator sees teacher and student gradients in one batch (concatenated), so its
  BatchNorm normalises both with the same statistics and it can use their scale.
- The student's gradient g_s is taken in training mode (the mode its CE is trained in), the
  teacher's in inference mode.
- Sobolev training matches the same CE input gradients the GREAT discriminator sees, with the
  squared L2 distance summed over the input (per example); its alpha has no published value.

Every `train_step` runs in a `tf.distribute` replica: losses are sums over the replica's examples
divided by the global batch, so the optimizers' cross-replica sum is the global mean.
"""

import os

import keras
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.saving import load_model
from great_tf.schedules import poly_adam
from great_tf.gradients import input_gradients
from great_tf.distribute import global_batch_size
from great_tf.precision import full_precision, loss_scale, loss_scaled, scale

METHODS = ("baseline", "distill", "sobolev", "great")
METHOD_NAMES = {"baseline": "Baseline", "distill": "Distillation", "sobolev": "Sobolev",
                "great": "GREAT"}
DEFAULT_ALPHA = {"distill": 0.1, "sobolev": 0.1, "great": 0.1}
DEFAULT_TEMPERATURE = 20.0  # the paper's grid-search optimum for CNN-5 + ResNet-18


# -- losses, per example --------------------------------------------------------------------------

def cross_entropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                          logits=full_precision(logits))


def hinton_kl(student_logits, teacher_logits, temperature):
    """KL(softmax(t / T) || softmax(s / T)) per example."""
    teacher_log_p = tf.nn.log_softmax(full_precision(teacher_logits) / temperature)
    student_log_p = tf.nn.log_softmax(full_precision(student_logits) / temperature)
    return tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)


def hinton_loss(labels, student_logits, teacher_logits, alpha, temperature):
    """(1 - alpha) * CE + alpha * T^2 * KL per example. The T^2 keeps the soft term's gradient
    on the scale of the hard term's as T grows (Hinton et al. 2015, Sec. 2)."""
    kl = hinton_kl(student_logits, tf.stop_gradient(teacher_logits), temperature)
    return (1.0 - alpha) * cross_entropy(labels, student_logits) + alpha * temperature**2 * kl


def sobolev_distance(student_gradients, teacher_gradients):
    """||g_s - g_t||^2 per example, summed over every input dimension."""
    diff = student_gradients - tf.stop_gradient(teacher_gradients)
    return tf.reduce_sum(tf.reshape(tf.square(diff), [tf.shape(diff)[0], -1]), axis=1)


def discriminator_losses(teacher_logits, student_logits):
    """(BCE(f(g_t), 1), BCE(f(g_s), 0)) per example, from the discriminator's logits."""
    teacher_logits = tf.reshape(full_precision(teacher_logits), [-1])
    student_logits = tf.reshape(full_precision(student_logits), [-1])
    return (
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(teacher_logits),
                                                logits=teacher_logits),
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(student_logits),
                                                logits=student_logits),
    )


# -- models ---------------------------------------------------------------------------------------

class CrossEntropyStudent(keras.Model):
    """The student trained on the labels alone (the baseline), and the base of every method.

    `teacher` is optional here; the other methods require it. Subclasses define `objective`.
    `call` is the student, so `evaluate` and `predict` report the student.
    """

    method = "baseline"

    def __init__(self, student, teacher=None, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False  # frozen: no trainable variable, inference-mode BN
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def build(self, input_shape=None):
        pass  # every sub-network is built at construction

    def call(self, x, training=False):
        return self.student(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.ce_tracker, self.accuracy, *self.extra_metrics()]

    def extra_metrics(self):
        return []

    def compile(self, optimizer="adam", **kwargs):
        super().compile(optimizer=loss_scaled(optimizer, self), **kwargs)
        self.optimizer.build(self.student.trainable_variables)

    def objective(self, x, y, global_batch):
        """(the replica's share of the loss, student logits, {metric tracker: per-example values})."""
        logits = self.student(x, training=True)
        ce = cross_entropy(y, logits)
        return tf.reduce_sum(ce) / global_batch, logits, {self.loss_tracker: ce, self.ce_tracker: ce}

    def student_gradients(self, x, y):
        """The gradient the optimizer applies to the student's variables (for tests), and logs."""
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            loss, logits, tracked = self.objective(x, y, global_batch_size(x, x.dtype))
            loss = scale(loss, loss_scale(getattr(self, "optimizer", None)))
        return tape.gradient(loss, variables), logits, tracked

    def unpack(self, data):
        """(x, y), with x in the student's variable dtype: float64 NumPy batches mix with nothing."""
        return tf.cast(data[0], self.student.dtype), data[1]

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

    def logs(self):
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = self.unpack(data)
        logits = self.student(x, training=False)
        ce = cross_entropy(y, logits)
        self.update_metrics(y, logits, {self.loss_tracker: ce, self.ce_tracker: ce})
        return {m.name: m.result() for m in (self.loss_tracker, self.ce_tracker, self.accuracy)}

    def teacher_input_gradients(self, x, y):
        """g_t: the frozen teacher's per-example input gradient, a constant for the student."""
        g_t, _ = input_gradients(self.teacher, x, y, training=False,
                                 loss_scale=loss_scale(getattr(self, "optimizer", None)))
        return tf.stop_gradient(g_t)

    def gradient_pair(self, x, y):
        """(g_t, g_s) with everything in inference mode: for summaries, changes no state."""
        g_s = input_gradients(self.student, x, y, training=False,
                              loss_scale=loss_scale(getattr(self, "optimizer", None)))[0]
        return self.teacher_input_gradients(x, y), g_s


class TeacherMixin:
    def require_teacher(self):
        if self.teacher is None:
            raise GreatError(f"method {self.method!r} needs a teacher: pass teacher=... "
                             f"(--teacher PATH on the command line)")


class HintonDistiller(TeacherMixin, CrossEntropyStudent):
    """Hinton distillation: (1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))."""

    method = "distill"

    def __init__(self, student, teacher, alpha=DEFAULT_ALPHA["distill"],
                 temperature=DEFAULT_TEMPERATURE, **kwargs):
        super().__init__(student, teacher, **kwargs)
        self.require_teacher()
        if temperature <= 0:
            raise GreatError(f"the temperature must be positive, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def extra_metrics(self):
        return [self.kl_tracker]

    def objective(self, x, y, global_batch):
        teacher_logits = self.teacher(x, training=False)
        logits = self.student(x, training=True)
        per_example = hinton_loss(y, logits, teacher_logits, self.alpha, self.temperature)
        tracked = {self.loss_tracker: per_example, self.ce_tracker: cross_entropy(y, logits),
                   self.kl_tracker: hinton_kl(logits, teacher_logits, self.temperature)}
        return tf.reduce_sum(per_example) / global_batch, logits, tracked


class SobolevStudent(TeacherMixin, CrossEntropyStudent):
    """Sobolev training: (1 - alpha) * CE + alpha * ||g_s - g_t||^2 (double backprop)."""

    method = "sobolev"

    def __init__(self, student, teacher, alpha=DEFAULT_ALPHA["sobolev"], **kwargs):
        super().__init__(student, teacher, **kwargs)
        self.require_teacher()
        self.alpha = float(alpha)
        self.sobolev_tracker = keras.metrics.Mean(name="sobolev")

    def extra_metrics(self):
        return [self.sobolev_tracker]

    def objective(self, x, y, global_batch):
        g_t = self.teacher_input_gradients(x, y)
        g_s, logits = input_gradients(self.student, x, y, training=True,
                                      loss_scale=loss_scale(getattr(self, "optimizer", None)))
        ce = cross_entropy(y, logits)
        distance = sobolev_distance(g_s, g_t)
        per_example = (1.0 - self.alpha) * ce + self.alpha * distance
        tracked = {self.loss_tracker: per_example, self.ce_tracker: ce,
                   self.sobolev_tracker: distance}
        return tf.reduce_sum(per_example) / global_batch, logits, tracked


class GreatDistiller(TeacherMixin, CrossEntropyStudent):
    """GREAT for knowledge distillation (Algorithm 2).

    One step: g_t (frozen teacher, inference mode) and g_s (student, training mode, recorded so
    it can be differentiated again); discriminator logits on [g_t; g_s] in one batch;
    discriminator loss [sum BCE(f(g_t), 1) + sum BCE(f(g_s), 0)] / global batch, descended by the
    discriminator; student loss [(1 - alpha) * sum CE - alpha * sum BCE(f(g_s), 0)] / global
    batch, descended by the student: its second term is the reversed discriminator gradient
    carried into the student's weights by double backprop.
    """

    method = "great"

    def __init__(self, student, teacher, discriminator, alpha=DEFAULT_ALPHA["great"], **kwargs):
        super().__init__(student, teacher, **kwargs)
        self.require_teacher()
        if discriminator is None:
            raise GreatError("GREAT needs a discriminator over input gradients")
        self.discriminator = discriminator
        self.alpha = float(alpha)
        self.disc_loss_tracker = keras.metrics.Mean(name="disc_loss")
        self.adversarial_tracker = keras.metrics.Mean(name="adversarial")
        self.disc_teacher_accuracy = keras.metrics.Mean(name="disc_acc_teacher")
        self.disc_student_accuracy = keras.metrics.Mean(name="disc_acc_student")

    def extra_metrics(self):
        return [self.disc_loss_tracker, self.adversarial_tracker, self.disc_teacher_accuracy,
                self.disc_student_accuracy]

    def compile(self, optimizer="adam", discriminator_optimizer=None, **kwargs):
        super().compile(optimizer, **kwargs)
        self.discriminator_optimizer = loss_scaled(discriminator_optimizer or "adam", self)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def discriminate(self, g_t, g_s, training):
        """Discriminator logits of teacher and student gradients, from one batch."""
        logits = self.discriminator(tf.concat([g_t, g_s], 0), training=training)
        return tf.split(tf.reshape(logits, [-1]), 2)

    def great_gradients(self, x, y):
        """(student grads, discriminator grads, student logits, tracked) of one GREAT step.

        Under mixed precision each loss is scaled by its optimizer's loss scale, and g_s, g_t
        (inputs of the discriminator) come unscaled from scaled inner backward passes.
        """
        batch = global_batch_size(x, x.dtype)
        student_scale = loss_scale(getattr(self, "optimizer", None))
        disc_scale = loss_scale(getattr(self, "discriminator_optimizer", None))
        g_t = self.teacher_input_gradients(x, y)
        with tf.GradientTape(persistent=True) as tape:
            g_s, logits = input_gradients(self.student, x, y, training=True,
                                          loss_scale=student_scale)
            ce = cross_entropy(y, logits)
            d_teacher, d_student = self.discriminate(g_t, g_s, training=True)
            bce_teacher, bce_student = discriminator_losses(d_teacher, d_student)
            disc_loss = (tf.reduce_sum(bce_teacher) + tf.reduce_sum(bce_student)) / batch
            student_loss = ((1.0 - self.alpha) * tf.reduce_sum(ce)
                            - self.alpha * tf.reduce_sum(bce_student)) / batch
            scaled_student_loss = scale(student_loss, student_scale)
            scaled_disc_loss = scale(disc_loss, disc_scale)
        student_grads = tape.gradient(scaled_student_loss, self.student.trainable_variables)
        disc_grads = tape.gradient(scaled_disc_loss, self.discriminator.trainable_variables)
        del tape
        tracked = {
            self.loss_tracker: (1.0 - self.alpha) * ce - self.alpha * bce_student,
            self.ce_tracker: ce,
            self.disc_loss_tracker: bce_teacher + bce_student,
            self.adversarial_tracker: bce_student,
            self.disc_teacher_accuracy: tf.cast(d_teacher > 0, tf.float32),
            self.disc_student_accuracy: tf.cast(d_student < 0, tf.float32),
        }
        return student_grads, disc_grads, logits, tracked

    def student_gradients(self, x, y):
        student_grads, _, logits, tracked = self.great_gradients(x, y)
        return student_grads, logits, tracked

    def train_step(self, data):
        x, y = self.unpack(data)
        student_grads, disc_grads, logits, tracked = self.great_gradients(x, y)
        self.discriminator_optimizer.apply(disc_grads, self.discriminator.trainable_variables)
        self.optimizer.apply(student_grads, self.student.trainable_variables)
        self.update_metrics(y, logits, tracked)
        return self.logs()

    def discriminator_accuracy(self, x, y):
        """(accuracy on teacher gradients, on student gradients), all in inference mode."""
        g_t, g_s = self.gradient_pair(x, y)
        d_teacher, d_student = self.discriminate(g_t, g_s, training=False)
        return (tf.reduce_mean(tf.cast(d_teacher > 0, tf.float32)),
                tf.reduce_mean(tf.cast(d_student < 0, tf.float32)))


MODEL_CLASSES = {
    "baseline": CrossEntropyStudent,
    "distill": HintonDistiller,
    "sobolev": SobolevStudent,
    "great": GreatDistiller,
}


def build_distiller(method, student, teacher=None, discriminator=None, alpha=None,
                    temperature=None):
    """The trainer of `student` for `method` in METHODS; alpha/temperature default to the paper's."""
    if method not in MODEL_CLASSES:
        raise GreatError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    kwargs = {"name": f"distill_{method}"}
    if method != "baseline":
        kwargs["alpha"] = DEFAULT_ALPHA[method] if alpha is None else float(alpha)
    if method == "distill":
        kwargs["temperature"] = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
    if method == "great":
        kwargs["discriminator"] = discriminator
    return MODEL_CLASSES[method](student, teacher, **kwargs)


def compile_distiller(model, steps_per_epoch, epochs, learning_rate=1e-3):
    """The supplement's CIFAR-10 optimiser, Adam 1e-3 with the poly multiplier, for the student
    and (our choice: the paper names none) for the discriminator."""
    extra = {}
    if isinstance(model, GreatDistiller):
        extra["discriminator_optimizer"] = poly_adam(learning_rate, steps_per_epoch, epochs)
    model.compile(optimizer=poly_adam(learning_rate, steps_per_epoch, epochs), **extra)
    return model


def load_teacher(path, num_classes=None, input_shape=None):
    """A teacher saved with `model.save(path)` (a .keras file), frozen; one-line errors."""
    if not path:
        raise GreatError("no teacher given: pass --teacher PATH (train one with --train-teacher)")
    if not os.path.exists(path):
        raise GreatError(f"teacher {path} does not exist: train one with "
                         f"`python -m trainers.distill --train-teacher resnet18` or fix the path")
    try:
        teacher = load_model(path)
    except Exception as err:  # noqa: BLE001 - any load failure is the user's file
        raise GreatError(f"cannot load the teacher {path}: {type(err).__name__}: {err}") from None
    if num_classes is not None and teacher.output_shape[-1] != num_classes:
        raise GreatError(f"teacher {path} has {teacher.output_shape[-1]} outputs, the data set "
                         f"{num_classes} classes")
    if input_shape is not None and tuple(teacher.input_shape[1:]) != tuple(input_shape):
        raise GreatError(f"teacher {path} takes inputs of shape {teacher.input_shape[1:]}, the "
                         f"data set has {tuple(input_shape)}")
    teacher.trainable = False
    return teacher
