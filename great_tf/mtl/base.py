"""The multi-task model every method extends, the method registry and the one plug-in hook.

A multi-task network is a shared encoder producing the feature `f` and one decoder per task.
Every decoder reads its own copy of `f` (an identity here, a GAL for GREAT), so one backward pass
yields each task's gradient at the shared feature separately.

A method is a `MultiTaskModel` subclass in its own file under `great_tf/mtl/methods/` with a class
attribute `method = "name"`: defining the class registers it (docs/design.md#mtl-methods). It
overrides ONE hook, `network_gradients(step)`: how this step's task losses and task gradients
become the gradients of the network's variables. The base gives it the pieces:

- `step.losses`: the task losses as this replica's shares (sum over its examples / global
  batch); `self.global_losses(step)` all-reduces them;
- `self.weighted_gradients(step, weights)`: the gradient of sum_i w_i L_i in one backward pass;
- `self.gradients_by_task(step)`: the per-task gradients of the shared part, summed over replicas
  BEFORE any method combines them nonlinearly (`TaskGradients`, great_tf/mtl/gradients.py), with
  respect to the shared parameters (default) or the shared feature (LibMTL's `rep_grad`).

Methods with their own variables (loss weights, GALs, a task classifier) list them in
`optimizer_variables()`; each list gets its own optimizer, a `compile` argument (Adam by
default). Class attribute `hyperparameters` ({name: default}) documents the method's knobs; the
trainer turns each into a `--<method>-<name>` flag.
"""

from dataclasses import dataclass

import keras
import tensorflow as tf

from great_tf.core import GreatModel
from great_tf.distribute import global_batch_size, replica_sum
from great_tf.errors import GreatError
from great_tf.precision import loss_scale, scale
from great_tf.schedules import ScheduledFit

_REGISTRY = {}


def register(cls):
    """Adds a method class to the registry under `cls.method` (done by subclassing)."""
    name = cls.__dict__.get("method")
    if name:
        if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
            raise GreatError(f"two multi-task methods are named {name!r}: "
                             f"{_REGISTRY[name].__qualname__} and {cls.__qualname__}")
        _REGISTRY[name] = cls
    return cls


def registry():
    from great_tf.mtl import methods  # noqa: F401 - importing the package registers every method

    return dict(_REGISTRY)


@dataclass
class Step:
    """What one training step has computed before the method's hook runs."""

    tape: tf.GradientTape
    feature: tf.Tensor
    heads: list
    outputs: dict
    per_example: list
    losses: tf.Tensor          # [T] replica shares of the global-batch mean task losses
    global_batch: tf.Tensor
    scale: tf.Tensor = None    # the main optimizer's loss scale (mixed precision) or None
    x: tf.Tensor = None        # the batch, for methods that evaluate it again (FAMO's
    y: dict = None             # losses after the update, in `after_update`)
    decoder_tape: tf.GradientTape = None  # the part after the encoder only (`step_gradient`)


@keras.saving.register_keras_serializable(package="great_tf")
class InitialLosses(keras.layers.Layer):
    """Remembers each task's loss on the first training batch (GREAT's C_i^0, GradNorm's L_i(0))."""

    def __init__(self, num_tasks, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        # Written with global values, the same on every replica: each replica writes its own
        # copy (aggregation "none"), without the broadcast from replica 0 per write that
        # "only_first_replica" costs under a strategy.
        self.values = self.add_weight(name="values", shape=(self.num_tasks,), initializer="zeros",
                                      trainable=False, aggregation="none")
        self.seen = self.add_weight(name="seen", shape=(), initializer="zeros", trainable=False,
                                    aggregation="none")

    def observe(self, global_losses):
        """Stores `global_losses` (global values: the same on every replica) on the first call;
        returns the stored values (no gradient)."""
        current = tf.stop_gradient(tf.convert_to_tensor(global_losses))
        values = tf.where(self.seen > 0, self.values, tf.maximum(current, 1e-12))
        self.values.assign(values)
        self.seen.assign(1.0)
        return values

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks}


@keras.saving.register_keras_serializable(package="great_tf")
class TaskWeights(keras.layers.Layer):
    """One scalar per task, trainable or a state (log-variances, loss weights, logits)."""

    def __init__(self, num_tasks, initial_value=0.0, trainable=True, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.initial_value = float(initial_value)
        self.values = self.add_weight(
            name="values", shape=(self.num_tasks,), trainable=trainable,
            initializer=keras.initializers.Constant(self.initial_value),
            aggregation="only_first_replica")

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks,
                "initial_value": self.initial_value}


class MultiTaskModel(ScheduledFit, GreatModel):
    """A shared encoder and one decoder per task; `call` returns {task name: output}.

    `y` in the data is a dict of targets keyed by task name, or a list in the order of `tasks`.
    Evaluation reports each task's loss and its metrics. The base step is equal weights; methods override `network_gradients`.
    """

    method = None
    hyperparameters = {}
    compile_instead = ("a task's loss and metrics are its Task's (subclass great_tf.mtl.Task: "
                       "per_example_loss, make_metrics) and the task weights are the method's "
                       "(build_method(name, ...))")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register(cls)

    def __init__(self, encoder, decoders, tasks, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        names = [t.name for t in self.tasks]
        if sorted(names) != sorted(decoders):
            raise GreatError(f"tasks {names} and decoders {sorted(decoders)} do not match")
        self.encoder = encoder
        self.decoders = {t.name: decoders[t.name] for t in self.tasks}
        self.track(keras.metrics.Mean(name="loss"))
        for t in self.tasks:
            self.track(keras.metrics.Mean(name=f"{t.name}_loss"))
        self.task_metrics = {t.name: self.track(*t.make_metrics()) for t in self.tasks}
        self.task_metrics = {k: v if isinstance(v, tuple) else (v,) for k, v in self.task_metrics.items()}

    @classmethod
    def default_components(cls, feature_shape, tasks, width):
        """Extra networks the method needs on the paper's network (GREAT: its task classifier)."""
        return {}

    def method_optimizers(self):
        """{compile argument: optimizer} for the method's own variables where its paper fixes
        the optimizer (FAMO: Adam 0.025 for its logits): the default of `compile` and of
        `compile_mtl` for that argument; other arguments default to Adam."""
        return {}

    def compile(self, optimizer="adam", **kwargs):
        for name, default in self.method_optimizers().items():
            if kwargs.get(name) is None:
                kwargs[name] = default
        super().compile(optimizer, **kwargs)
        self.mark_state_layers_built()

    def mark_state_layers_built(self):
        """Marks built the layers that hold state made in `__init__` and have no `build` of their
        own (`TaskWeights`, `InitialLosses`, a method's moving averages): they are never called,
        so Keras would never mark them. While any layer is unbuilt, Keras' `fit` and `evaluate`
        under a tf.distribute strategy re-run a symbolic forward pass of the whole model at
        every call (1.3 s per call for multi-task GREAT at width 8, on every epoch's validation
        too)."""
        for layer in self._flatten_layers(include_self=False):
            if not layer.built and layer.weights and type(layer).build is keras.layers.Layer.build:
                layer.built = True

    # -- data ------------------------------------------------------------------------------------
    def unpack(self, data):
        x, y = super().unpack(data)
        return x, self.targets_by_task(y)

    def targets_by_task(self, y):
        """{task name: target}: `y` as a dict with every task's name (extra keys are ignored) or
        a list or tuple in the order of `tasks`."""
        names = [t.name for t in self.tasks]
        if isinstance(y, (list, tuple)):
            if len(y) != len(names):
                raise GreatError(f"got {len(y)} targets for the {len(names)} tasks {', '.join(names)}: "
                                 f"give one per task, in that order, or a dict keyed by task name")
            return dict(zip(names, y))
        if not isinstance(y, dict):
            raise GreatError(f"the targets are a {type(y).__name__}: give a dict keyed by the task "
                             f"names {', '.join(names)} (or a list in that order)")
        missing = [n for n in names if n not in y]
        if missing:
            raise GreatError(f"the targets have no {', '.join(map(repr, missing))}: their keys are "
                             f"{', '.join(map(repr, y))}, the tasks are {', '.join(names)}")
        return {n: y[n] for n in names}

    # -- forward ---------------------------------------------------------------------------------
    def head_inputs(self, feature):
        """Each task's own view of the shared feature (identities here; GALs in GREAT)."""
        return [tf.identity(feature) for _ in self.tasks]

    def forward(self, x, training):
        feature = self.encoder(x, training=training)
        heads, outputs = self.decode(feature, training)
        return feature, heads, outputs

    def decode(self, feature, training):
        """(heads, outputs): every task's view of the feature and its decoder's output."""
        heads = self.head_inputs(feature)
        outputs = {t.name: self.decoders[t.name](h, training=training)
                   for t, h in zip(self.tasks, heads)}
        return heads, outputs

    def call(self, x, training=False):
        return self.forward(x, training)[2]

    # -- variables -------------------------------------------------------------------------------
    @property
    def shared_variables(self):
        return list(self.encoder.trainable_variables)

    @property
    def task_variables(self):
        variables = []
        for decoder in self.decoders.values():
            variables += decoder.trainable_variables
        return variables

    @property
    def network_variables(self):
        return self.shared_variables + self.task_variables

    def variable_dtype(self):
        return self.encoder.trainable_variables[0].dtype

    # -- losses and metrics ----------------------------------------------------------------------
    def per_example_losses(self, y, outputs):
        return [t.per_example_loss(y[t.name], outputs[t.name]) for t in self.tasks]

    @staticmethod
    def replica_losses(per_example, global_batch):
        """Each task's loss as this replica's share: a sum over its examples / the global batch."""
        return tf.stack([tf.reduce_sum(l) / tf.cast(global_batch, l.dtype) for l in per_example])

    def update_task_metrics(self, y, outputs, per_example):
        self._trackers["loss"].update_state(tf.add_n(per_example))
        for t, losses in zip(self.tasks, per_example):
            self._trackers[f"{t.name}_loss"].update_state(losses)
            for metric in self.task_metrics[t.name]:
                metric.update_state(y[t.name], outputs[t.name])

    def evaluate_batch(self, x, y):
        outputs = self(x, training=False)
        self.update_task_metrics(y, outputs, self.per_example_losses(y, outputs))

    def metric_directions(self):
        """{metric: "lower"|"higher"} over every task: what Δm needs."""
        directions = {}
        for t in self.tasks:
            directions.update(t.metric_directions())
        return directions

    # -- the step --------------------------------------------------------------------------------
    def train_step(self, data):
        x, y = self.unpack(data)
        global_batch = global_batch_size(x)
        with tf.GradientTape(persistent=True) as tape:
            feature = self.encoder(x, training=True)
            with tf.GradientTape(persistent=True) as decoder_tape:  # see `step_gradient`
                decoder_tape.watch(feature)  # the walk back stops there
                heads, outputs = self.decode(feature, training=True)
                per_example = self.per_example_losses(y, outputs)
                losses = self.replica_losses(per_example, global_batch)
        step = Step(tape, feature, heads, outputs, per_example, losses, global_batch,
                    loss_scale(self.optimizer), x, y,  # scale read before `apply` may change it
                    decoder_tape)
        grads = self.network_gradients(step)
        self.optimizer.apply(grads, self.network_variables)
        self.after_update(step)
        del tape, decoder_tape
        self.update_task_metrics(y, outputs, per_example)
        return self.logs()

    def network_gradients(self, step):
        """THE HOOK: the gradients of `network_variables` for this step. Base: equal weights."""
        return self.weighted_gradients(step, tf.ones_like(step.losses))

    def after_update(self, step):
        """Runs after the network's update (methods that learn from it: GREAT, FAMO)."""
        return None  # a body AutoGraph can convert (a docstring alone makes it warn)

    # -- pieces for the hook ---------------------------------------------------------------------
    def global_losses(self, step):
        """The global-batch mean task losses, the same on every replica (one all-reduce of T)."""
        return replica_sum(step.losses)

    def weighted_gradients(self, step, weights, variables=None):
        """d(sum_i w_i L_i)/d variables (default: the network's), `weights` held constant, in one
        backward pass, scaled for the main optimizer."""
        weights = tf.stop_gradient(tf.cast(weights, step.losses.dtype))
        return self.step_gradient(step, step.losses, variables or self.network_variables,
                                  output_gradients=scale(weights, step.scale))

    def step_gradient(self, step, target, sources, output_gradients=None):
        """`step.tape.gradient(target, sources, output_gradients)`, on the decoders' own tape when
        every source is a decoder variable or a head.

        A tape walks back through everything `target` depends on, not only towards `sources`.
        Through the encoder that is, under a strategy, one all-reduce per BatchNorm layer
        (ExactBatchNorm's backward pass), and collectives are never pruned as dead code: a
        gradient of the decoders alone would pay a whole encoder backward pass for nothing
        (docs/design.md#distribution).
        """
        decoder_side = {id(v) for v in self.task_variables} | {id(h) for h in step.heads}
        on_decoders = all(id(s) in decoder_side for s in tf.nest.flatten(sources))
        tape = step.decoder_tape if on_decoders and step.decoder_tape is not None else step.tape
        return tape.gradient(target, sources, output_gradients=output_gradients)

    def gradients_by_task(self, step, space="shared"):
        """The per-task gradients of the shared part, exact across replicas (TaskGradients)."""
        from great_tf.mtl.gradients import TaskGradients

        return TaskGradients(self, step, space)

    def task_gradients(self, x, y):
        """Per-example gradients of each task's loss at the shared feature, in inference mode
        (diagnostics: TensorBoard histograms)."""
        with tf.GradientTape() as tape:
            _, heads, outputs = self.forward(x, training=False)
            loss = tf.add_n([tf.reduce_sum(l) for l in self.per_example_losses(y, outputs)])
        return tape.gradient(loss, heads)

    def combined_gradients(self, step, grads, shared_update, task_weights=None):
        """Network gradients from the encoder's gradients of a combined update (`TaskGradients.
        apply_weights` / `apply_vector`) and
        the decoders' own task gradients, weighted by `task_weights` (default 1: raw losses),
        from the pass through the decoders that `grads` made already."""
        if hasattr(grads, "decoder_gradients"):
            return list(shared_update) + grads.decoder_gradients(task_weights)
        weights = tf.ones_like(step.losses) if task_weights is None else task_weights
        decoder_grads = self.weighted_gradients(step, weights, self.task_variables)
        return list(shared_update) + list(decoder_grads)
