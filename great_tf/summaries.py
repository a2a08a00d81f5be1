"""TensorBoard summaries beyond Keras' scalars: GAL statistics and gradient histograms.

Keras' `TensorBoard` callback writes every logged loss and metric. The callbacks here add what
happens inside a GREAT step, measured at each epoch end on a fixed probe batch, written to
`<logdir>/great` (shown by TensorBoard beside `train` and `validation`).
"""

import os

import keras
import numpy as np
import tensorflow as tf


def tensor_stats(prefix, values):
    values = tf.convert_to_tensor(values)
    return {
        f"{prefix}/mean": tf.reduce_mean(values),
        f"{prefix}/std": tf.math.reduce_std(values),
        f"{prefix}/min": tf.reduce_min(values),
        f"{prefix}/max": tf.reduce_max(values),
    }


class EpochSummaryWriter(keras.callbacks.Callback):
    """Calls `summarize()` under a TensorBoard writer for `<logdir>/<subdir>` once before the
    run's first update and after every epoch, with the epoch count as the step. A resumed run
    writes its first summary at the epoch it resumes from, so the curves continue."""

    def __init__(self, logdir, subdir):
        super().__init__()
        self.logdir = os.path.join(logdir, subdir)
        self._writer = None
        self._started = False

    def summarize(self):
        raise NotImplementedError

    def write(self, step):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.logdir)
        with self._writer.as_default(step=step):
            self.summarize()
        self._writer.flush()

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            self.write(epoch)  # the state before this run's first update

    def on_epoch_end(self, epoch, logs=None):
        self.write(epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProbeSummaries(EpochSummaryWriter):
    """Writes `scalars(model)` and `histograms(model)` at every epoch end (and at the start).

    Subclasses return dicts {tag: value}; `probe` is a fixed batch (x, y) they may use.
    """

    def __init__(self, logdir, probe=None, subdir="great"):
        super().__init__(logdir, subdir)
        self.probe = probe

    def scalars(self, model):
        return {}

    def histograms(self, model):
        return {}

    def summarize(self):
        for tag, value in self.scalars(self.model).items():
            tf.summary.scalar(tag, value)
        for tag, value in self.histograms(self.model).items():
            tf.summary.histogram(tag, value)


class MultiTaskSummaries(ProbeSummaries):
    """GAL gamma statistics and histograms; every task's gradient at the shared feature."""

    def scalars(self, model):
        out = {}
        for name, gal in getattr(model, "gals", {}).items():
            out.update(tensor_stats(f"gal/{name}", gal.gamma))
        weights = getattr(model, "task_weights", None)
        if weights is not None:
            for task, value in zip(model.tasks, tf.unstack(weights.values)):
                out[f"task_weight/{task.name}"] = value
        return out

    def histograms(self, model):
        out = {f"gal/{name}": gal.gamma for name, gal in getattr(model, "gals", {}).items()}
        if self.probe is not None:
            if getattr(self, "_task_gradients", None) is None:
                self._task_gradients = tf.function(model.task_gradients)
            x, y = self.probe
            for task, grad in zip(model.tasks, self._task_gradients(x, y)):
                out[f"task_gradient/{task.name}"] = grad
                out[f"task_gradient_norm/{task.name}"] = tf.norm(
                    tf.reshape(grad, [tf.shape(grad)[0], -1]), axis=1)
        return out


def read_events(logdir):
    """{tag: [(step, value or histogram array)]} from every event file under `logdir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for root, _, files in os.walk(logdir):
        if not any(f.startswith("events.out") for f in files):
            continue
        acc = EventAccumulator(root, size_guidance={"tensors": 0, "histograms": 0, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("tensors", []):
            rel = os.path.relpath(root, logdir)
            found[f"{rel}/{tag}"] = [
                (e.step, tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)
            ]
    return {tag: [(s, np.asarray(v)) for s, v in events] for tag, events in found.items()}


class DefenseSummaries(ProbeSummaries):
    """The current alpha and beta, and histograms of the main network's input gradients.

    On the probe batch, in inference mode: the plain loss gradient dCE/dx, the masked gradient
    the auxiliary network reads, and their per-example L2 norms (GREAT should flatten them).
    """

    def scalars(self, model):
        out = {}
        if getattr(model, "auxiliary", None) is not None:
            out["schedule/alpha"] = model.current_alpha()
            out["schedule/beta"] = model.current_beta()
        return out

    def histograms(self, model):
        from great_tf.gradients import compiled_input_gradients, compiled_masked_input_gradients

        if self.probe is None:
            return {}
        x, y = tf.convert_to_tensor(self.probe[0], tf.float32), tf.convert_to_tensor(self.probe[1])
        plain, _ = compiled_input_gradients(model.main, x, y, training=False)
        masked, _ = compiled_masked_input_gradients(model.main, x, y, training=False)
        out = {}
        for name, grad in (("input_gradient", plain), ("masked_input_gradient", masked)):
            out[f"{name}/values"] = grad
            out[f"{name}/norm"] = tf.norm(tf.reshape(grad, [tf.shape(grad)[0], -1]), axis=1)
        return out


class DistillationSummaries(ProbeSummaries):
    """Input gradients of the student and the frozen teacher on the probe batch: histograms of
    both, their norms and cosine similarity, and (GREAT) the discriminator's accuracy on each.
    Everything runs in inference mode, so writing summaries changes no model state."""

    def scalars(self, model):
        if self.probe is None or getattr(model, "teacher", None) is None:
            return {}
        x, y = self.probe
        g_t, g_s = model.gradient_pair(x, y)
        flat_t = tf.reshape(g_t, [tf.shape(g_t)[0], -1])
        flat_s = tf.reshape(g_s, [tf.shape(g_s)[0], -1])
        cosine = tf.reduce_sum(tf.math.l2_normalize(flat_t, 1) * tf.math.l2_normalize(flat_s, 1), 1)
        out = {
            "input_gradient_norm/teacher": tf.reduce_mean(tf.norm(flat_t, axis=1)),
            "input_gradient_norm/student": tf.reduce_mean(tf.norm(flat_s, axis=1)),
            "input_gradient_cosine/student_teacher": tf.reduce_mean(cosine),
        }
        if hasattr(model, "discriminator_accuracy"):
            on_teacher, on_student = model.discriminator_accuracy(x, y)
            # TensorBoard keeps Keras' unit, fractions (the campaign's archived runs read them so).
            out["discriminator_accuracy/teacher"] = on_teacher / 100.0
            out["discriminator_accuracy/student"] = on_student / 100.0
        return out

    def histograms(self, model):
        if self.probe is None or getattr(model, "teacher", None) is None:
            return {}
        g_t, g_s = model.gradient_pair(*self.probe)
        return {"input_gradient/teacher": g_t, "input_gradient/student": g_s}
