"""Multi-task learning with GREAT (Algorithm 3) and the paper's three baselines.

All four methods share one network: an encoder producing the shared feature `f`, and one decoder
per task. Every decoder reads its own copy of `f` (through a GAL for GREAT, an identity for the
baselines), so one backward pass yields each task's gradient at the shared feature separately.

- `GreatMTL`: task losses normalised by their initial values; the encoder receives
  sum_i gamma_i * g_i through the GALs; a task classifier learns to tell the gradients
  gamma_i * g_i apart by task; the GALs receive its reversed gradient.
- `EqualWeightsMTL`: the plain sum of the task losses.
- `UncertaintyMTL` (Kendall et al. 2018): learned log-variances; the network is trained with the
  weights normalised to sum to 1, as the paper does for its comparison.
- `GradNormMTL` (Chen et al. 2018): weights trained so that the gradient norms at the last shared
  layer follow the tasks' relative training rates (alpha = 0.6), renormalised to sum to the
  number of tasks.

Every `train_step` is written for a `tf.distribute` replica: losses are sums over the replica's
examples divided by the global batch, and every quantity that must be global is all-reduced.
"""

from dataclasses import dataclass

import keras
import tensorflow as tf

from great_tf.distribute import global_batch_size, num_replicas, replica_sum
from great_tf.errors import GreatError
from great_tf.precision import full_precision, loss_scale, loss_scaled, rescale, scale, unscale
from great_tf.schedules import poly_adam
from great_tf.layers import GAL
from great_tf.models import classification_decoder, dense_decoder, resnet18_encoder, task_classifier

METHODS = ("great", "equal", "uncertainty", "gradnorm")


@dataclass(frozen=True)
class Task:
    """A task: its name (the key of its target and output), kind, and output size."""

    name: str
    kind: str  # "classification" (integer labels, logits) or "regression" (MSE)
    units: int

    def per_example_loss(self, target, output):
        output = full_precision(output)
        if self.kind == "classification":
            return tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(tf.reshape(target, [-1]), tf.int32), logits=output
            )
        error = tf.square(tf.cast(target, output.dtype) - output)
        return tf.reduce_mean(tf.reshape(error, [tf.shape(error)[0], -1]), axis=1)

    def make_metric(self):
        if self.kind == "classification":
            return ClassError(name=f"{self.name}_error")
        return keras.metrics.RootMeanSquaredError(name=f"{self.name}_rmse")


CIFAR10_NOISY_TASKS = (
    Task("class", "classification", 10),
    Task("colour", "regression", 3),
    Task("edges", "regression", 1),
    Task("auto", "regression", 1),
)


@keras.saving.register_keras_serializable(package="great_tf")
class ClassError(keras.metrics.SparseCategoricalAccuracy):
    """Classification error in percent (Table 4's first column)."""

    def result(self):
        return 100.0 * (1.0 - super().result())


@keras.saving.register_keras_serializable(package="great_tf")
class InitialLosses(keras.layers.Layer):
    """Remembers each task's loss on the first training batch: the C_i^0 of Algorithm 3."""

    def __init__(self, num_tasks, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.values = self.add_weight(
            name="values", shape=(self.num_tasks,), initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self.seen = self.add_weight(
            name="seen", shape=(), initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )

    def observe(self, global_losses):
        """Stores `global_losses` on the first call; returns the stored values (no gradient)."""
        current = tf.stop_gradient(tf.convert_to_tensor(global_losses))
        values = tf.where(self.seen > 0, self.values, tf.maximum(current, 1e-12))
        self.values.assign(values)
        self.seen.assign(1.0)
        return values

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks}


class MultiTaskModel(keras.Model):
    """A shared encoder and one decoder per task; subclasses define how the tasks are weighted.

    `call` returns a dict {task name: output}. `y` in the data is a dict of targets with the same
    keys. Evaluation reports each task's loss and its Table 4 metric (class % error or RMSE).
    """

    def __init__(self, encoder, decoders, tasks, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tuple(tasks)
        names = [t.name for t in self.tasks]
        if sorted(names) != sorted(decoders):
            raise GreatError(f"tasks {names} and decoders {sorted(decoders)} do not match")
        self.encoder = encoder
        self.decoders = {t.name: decoders[t.name] for t in self.tasks}
        self.loss_trackers = {t.name: keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks}
        self.task_metrics = {t.name: t.make_metric() for t in self.tasks}
        self.total_tracker = keras.metrics.Mean(name="loss")

    # -- forward ------------------------------------------------------------------------------
    def head_inputs(self, feature):
        """Each task's own view of the shared feature (identities here; GALs in GreatMTL)."""
        return [tf.identity(feature) for _ in self.tasks]

    def forward(self, x, training):
        feature = self.encoder(x, training=training)
        heads = self.head_inputs(feature)
        outputs = {t.name: self.decoders[t.name](h, training=training) for t, h in zip(self.tasks, heads)}
        return feature, heads, outputs

    def build(self, input_shape=None):
        pass  # every sub-network is built at construction

    def call(self, x, training=False):
        return self.forward(x, training)[2]

    # -- losses and metrics -------------------------------------------------------------------
    def per_example_losses(self, y, outputs):
        return [t.per_example_loss(y[t.name], outputs[t.name]) for t in self.tasks]

    @staticmethod
    def replica_losses(per_example, global_batch):
        """Each task's loss as this replica's share: a sum over its examples / the global batch."""
        return tf.stack([tf.reduce_sum(l) / tf.cast(global_batch, l.dtype) for l in per_example])

    def update_task_metrics(self, y, outputs, per_example):
        total = tf.add_n(per_example)
        self.total_tracker.update_state(total)
        for t, losses in zip(self.tasks, per_example):
            self.loss_trackers[t.name].update_state(losses)
            self.task_metrics[t.name].update_state(y[t.name], outputs[t.name])

    @property
    def metrics(self):
        return [self.total_tracker, *self.loss_trackers.values(), *self.task_metrics.values(),
                *self.extra_metrics()]

    def extra_metrics(self):
        return []

    def logs(self):
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data[0], data[1]
        outputs = self(x, training=False)
        self.update_task_metrics(y, outputs, self.per_example_losses(y, outputs))
        return {m.name: m.result() for m in self.metrics if not m.name.startswith("train_")}

    # -- training -----------------------------------------------------------------------------
    @property
    def network_variables(self):
        variables = list(self.encoder.trainable_variables)
        for decoder in self.decoders.values():
            variables += decoder.trainable_variables
        return variables

    def compile(self, optimizer="adam", weight_optimizer=None, **kwargs):
        """`weight_optimizer` trains the method's own weights (GALs, task weights), if it has any."""
        super().compile(optimizer=loss_scaled(optimizer, self), **kwargs)
        self.optimizer.build(self.network_variables)
        self.weight_optimizer = None
        if self.method_variables():
            self.weight_optimizer = loss_scaled(weight_optimizer or "adam", self)
            self.weight_optimizer.build(self.method_variables())

    def method_variables(self):
        """The variables a method trains besides the network (none for equal weights)."""
        return []

    def task_gradients(self, x, y):
        """Per-example gradients of each task's loss at the shared feature, as a list (diagnostics)."""
        with tf.GradientTape() as tape:
            _, heads, outputs = self.forward(x, training=False)
            loss = tf.reduce_sum(tf.stack([tf.reduce_sum(l) for l in self.per_example_losses(y, outputs)]))
        return tape.gradient(loss, heads)


class EqualWeightsMTL(MultiTaskModel):
    """Baseline: every task's loss with weight 1."""

    method = "equal"

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            _, _, outputs = self.forward(x, training=True)
            per_example = self.per_example_losses(y, outputs)
            total = tf.reduce_sum(self.replica_losses(per_example, global_batch_size(x)))
            total = scale(total, loss_scale(self.optimizer))
        self.optimizer.apply(tape.gradient(total, self.network_variables), self.network_variables)
        self.update_task_metrics(y, outputs, per_example)
        return self.logs()


@keras.saving.register_keras_serializable(package="great_tf")
class TaskWeights(keras.layers.Layer):
    """One trainable scalar per task (log-variances for uncertainty, weights for GradNorm)."""

    def __init__(self, num_tasks, initial_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)
        self.initial_value = float(initial_value)
        self.values = self.add_weight(
            name="values", shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_value),
            aggregation="only_first_replica",
        )

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks, "initial_value": self.initial_value}


class WeightedMTL(MultiTaskModel):
    """Shared pieces of the two baselines that learn one weight per task."""

    initial_weight = 0.0

    def __init__(self, encoder, decoders, tasks, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.task_weights = TaskWeights(len(self.tasks), self.initial_weight, name="task_weights")
        self.weight_trackers = [keras.metrics.Mean(name=f"train_weight_{t.name}") for t in self.tasks]

    def method_variables(self):
        return [self.task_weights.values]

    def extra_metrics(self):
        return self.weight_trackers

    def track_weights(self, weights):
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)


class UncertaintyMTL(WeightedMTL):
    """Kendall et al. (2018): loss_i / sigma_i^2 (classification) or / 2 sigma_i^2 (regression),
    plus log sigma_i, with s_i = log sigma_i^2 learned.

    The log-variances learn from Kendall's objective. The network is trained with the weights
    c_i exp(-s_i) normalised to sum to 1 (the paper's fair comparison with GradNorm).
    """

    method = "uncertainty"

    def kendall_factors(self):
        return tf.constant([1.0 if t.kind == "classification" else 0.5 for t in self.tasks],
                           self.task_weights.values.dtype)

    def normalized_weights(self):
        weights = self.kendall_factors() * tf.exp(-self.task_weights.values)
        return weights / tf.reduce_sum(weights)

    def train_step(self, data):
        x, y = data[0], data[1]
        log_vars = self.task_weights.values
        with tf.GradientTape() as tape:
            _, _, outputs = self.forward(x, training=True)
            per_example = self.per_example_losses(y, outputs)
            losses = self.replica_losses(per_example, global_batch_size(x))
            network_loss = tf.reduce_sum(tf.stop_gradient(self.normalized_weights()) * losses)
            # The regularizer is split across replicas, whose gradients the optimizer sums.
            kendall_loss = tf.reduce_sum(
                self.kendall_factors() * tf.exp(-log_vars) * tf.stop_gradient(losses)
                + 0.5 * log_vars / num_replicas()
            )
            total = (scale(network_loss, loss_scale(self.optimizer))
                     + scale(kendall_loss, loss_scale(self.weight_optimizer)))
        grads = tape.gradient(total, self.network_variables + [log_vars])
        self.optimizer.apply(grads[:-1], self.network_variables)
        self.weight_optimizer.apply(grads[-1:], [log_vars])
        self.update_task_metrics(y, outputs, per_example)
        self.track_weights(self.normalized_weights())
        return self.logs()


def last_kernel(model):
    """The kernel of the last layer with one: GradNorm's "last shared layer"."""
    for layer in reversed(model.layers):
        if getattr(layer, "kernel", None) is not None:
            return layer.kernel
        if isinstance(layer, keras.Model):
            kernel = last_kernel(layer)
            if kernel is not None:
                return kernel
    return None


class GradNormMTL(WeightedMTL):
    """GradNorm (Chen et al. 2018) with the gradient norms taken at the last shared layer.

    Per step: the network descends sum_i w_i L_i; the weights descend
    sum_i |w_i ||grad_W L_i|| - mean_j(w_j ||grad_W L_j||) * r_i^alpha|, the target held
    constant, with r_i the task's loss ratio L_i/L_i(0) over its mean; then the weights are
    clipped at 1e-3 and renormalised to sum to the number of tasks.
    """

    method = "gradnorm"
    initial_weight = 1.0

    def __init__(self, encoder, decoders, tasks, alpha=0.6, shared_kernel=None, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.alpha = float(alpha)
        self.initial_losses = InitialLosses(len(self.tasks), name="initial_losses")
        self.shared_kernel = shared_kernel if shared_kernel is not None else last_kernel(encoder)
        if self.shared_kernel is None:
            raise GreatError("GradNorm needs a layer with a kernel in the encoder; pass shared_kernel")

    def train_step(self, data):
        x, y = data[0], data[1]
        weights = self.task_weights.values
        with tf.GradientTape(persistent=True) as tape:
            feature, heads, outputs = self.forward(x, training=True)
            per_example = self.per_example_losses(y, outputs)
            losses = self.replica_losses(per_example, global_batch_size(x))
            network_loss = tf.reduce_sum(tf.stop_gradient(weights) * losses)
            network_scale = loss_scale(self.optimizer)
            network_loss = scale(network_loss, network_scale)
        grads = tape.gradient(network_loss, self.network_variables + heads)
        n_vars = len(self.network_variables)
        head_grads = grads[n_vars:]
        # grad_W L_i from task i's gradient at the feature: a short backprop from f to W.
        norms = tf.stack([
            unscale(tf.norm(replica_sum(tape.gradient(
                feature, self.shared_kernel, output_gradients=g / tf.cast(w, g.dtype)))),
                network_scale)
            for g, w in zip(head_grads, tf.unstack(weights))
        ])
        del tape
        global_losses = replica_sum(losses)
        weight_grad = self.gradnorm_weight_gradient(weights, norms, global_losses,
                                                    loss_scale(self.weight_optimizer))
        self.optimizer.apply(grads[:n_vars], self.network_variables)
        # Every replica computed the same global gradient; the optimizer sums across replicas.
        self.weight_optimizer.apply([weight_grad / num_replicas()], [weights])
        self.renormalize_weights()
        self.update_task_metrics(y, outputs, per_example)
        self.track_weights(self.task_weights.values)
        return self.logs()

    def gradnorm_weight_gradient(self, weights, norms, global_losses, factor=None):
        """The GradNorm loss's gradient w.r.t. the weights, for a loss scaled by `factor`."""
        ratios = global_losses / self.initial_losses.observe(global_losses)
        relative = ratios / tf.reduce_mean(ratios)
        with tf.GradientTape() as tape:
            grad_norms = weights * norms
            target = tf.stop_gradient(tf.reduce_mean(grad_norms) * relative**self.alpha)
            gradnorm_loss = scale(tf.reduce_sum(tf.abs(grad_norms - target)), factor)
        return tape.gradient(gradnorm_loss, weights)

    def renormalize_weights(self):
        weights = tf.maximum(self.task_weights.values, 1e-3)
        self.task_weights.values.assign(len(self.tasks) * weights / tf.reduce_sum(weights))


class GreatMTL(MultiTaskModel):
    """GREAT for multi-task learning (Algorithm 3).

    One step: (1) task losses normalised by their first-batch values, C_i = J_i / C_i^0;
    (2) decoders updated with their own dC_i, the encoder with sum_i gamma_i * g_i (the GALs scale
    the gradients in the backward pass), g_i = dC_i/df per example; (3) the task classifier
    updated to classify gamma_i * g_i as task i, g_i held constant (first order);
    (4) each GAL updated with the reversed classifier gradient, -dC'/dgamma_i.
    """

    method = "great"

    def __init__(self, encoder, decoders, tasks, classifier=None, gals=None, gal_min_value=1e-3,
                 **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        feature_shape = tuple(encoder.output.shape[1:])
        if gals is None:
            gals = {t.name: GAL(gal_min_value, name=f"gal_{t.name}") for t in self.tasks}
        self.gals = {t.name: gals[t.name] for t in self.tasks}
        for gal in self.gals.values():
            if not gal.built:
                gal.build((None,) + feature_shape)
        if classifier is None:
            classifier = task_classifier(feature_shape, len(self.tasks), width=feature_shape[-1] // 8)
        self.classifier = classifier
        self.initial_losses = InitialLosses(len(self.tasks), name="initial_losses")
        self.classifier_loss_tracker = keras.metrics.Mean(name="train_task_classifier_loss")
        self.classifier_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="train_task_classifier_accuracy")

    def head_inputs(self, feature):
        return [self.gals[t.name](feature) for t in self.tasks]

    def method_variables(self):
        return [gal.gamma for gal in self.gals.values()]

    def extra_metrics(self):
        return [self.classifier_loss_tracker, self.classifier_accuracy]

    def compile(self, optimizer="adam", weight_optimizer=None, classifier_optimizer=None, **kwargs):
        """`weight_optimizer` trains the GALs; `classifier_optimizer` the task classifier."""
        super().compile(optimizer, weight_optimizer, **kwargs)
        self.classifier_optimizer = loss_scaled(classifier_optimizer or "adam", self)
        self.classifier_optimizer.build(self.classifier.trainable_variables)

    def train_step(self, data):
        x, y = data[0], data[1]
        global_batch = global_batch_size(x)
        with tf.GradientTape() as tape:
            _, heads, outputs = self.forward(x, training=True)
            per_example = self.per_example_losses(y, outputs)
            losses = self.replica_losses(per_example, global_batch)
            initial = self.initial_losses.observe(replica_sum(losses))
            normalized = tf.reduce_sum(losses / initial)
            network_scale = loss_scale(self.optimizer)  # read before `apply` may change it
            normalized = scale(normalized, network_scale)
        grads = tape.gradient(normalized, self.network_variables + heads)
        n_vars = len(self.network_variables)
        self.optimizer.apply(grads[:n_vars], self.network_variables)
        # Loss scale undone (mixed precision), then scaled back from the global-batch mean to
        # each example's own gradient.
        task_grads = [unscale(g, network_scale) for g in grads[n_vars:]]
        task_grads = [g * tf.cast(global_batch, g.dtype) for g in task_grads]
        self.alignment_step(task_grads, global_batch)
        self.update_task_metrics(y, outputs, per_example)
        return self.logs()

    def alignment_step(self, task_grads, global_batch):
        """Trains the task classifier on gamma_i * g_i and the GALs against it."""
        gammas = self.method_variables()
        labels = tf.concat([tf.fill([tf.shape(g)[0]], i) for i, g in enumerate(task_grads)], 0)
        with tf.GradientTape() as tape:
            aligned = tf.concat(
                [gamma * tf.stop_gradient(g) for gamma, g in zip(gammas, task_grads)], 0)
            aligned = tf.cast(aligned, self.classifier.compute_dtype)
            logits = self.classifier(aligned, training=True)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=full_precision(logits))
            loss = tf.reduce_sum(per_example) / tf.cast(global_batch * len(task_grads), per_example.dtype)
            classifier_scale = loss_scale(self.classifier_optimizer)
            loss = scale(loss, classifier_scale)
        classifier_vars = self.classifier.trainable_variables
        grads = tape.gradient(loss, classifier_vars + gammas)
        # The GALs' optimizer may use another loss scale than the classifier's.
        gamma_grads = rescale(grads[len(classifier_vars):], classifier_scale,
                              loss_scale(self.weight_optimizer))
        self.classifier_optimizer.apply(grads[: len(classifier_vars)], classifier_vars)
        # Gradient reversal: the GALs ascend the classifier's loss.
        self.weight_optimizer.apply([-g for g in gamma_grads], gammas)
        self.classifier_loss_tracker.update_state(per_example)
        self.classifier_accuracy.update_state(labels, logits)

    @classmethod
    def from_functional(cls, model, tasks, classifier=None, **kwargs):
        """GREAT on a user's functional model that holds one `GAL` per task.

        Every GAL must read the same shared feature and output i must depend on the GAL of
        task i (the GALs in the order of `tasks`). The model's own layers and GAL weights are
        reused, so training this wrapper trains `model`.
        """
        gals = [layer for layer in model.layers if isinstance(layer, GAL)]
        tasks = tuple(tasks)
        if len(gals) != len(tasks) or len(model.outputs) != len(tasks):
            raise GreatError(
                f"the model has {len(gals)} GAL layers and {len(model.outputs)} outputs for "
                f"{len(tasks)} tasks: put one GAL between the shared feature and each task's head")
        features = {id(gal.input) for gal in gals}
        if len(features) != 1:
            raise GreatError("every GAL must take the same shared feature tensor as input")
        encoder = keras.Model(model.inputs, gals[0].input, name=f"{model.name}_encoder")
        decoders = {
            t.name: keras.Model(gal.output, out, name=f"{model.name}_{t.name}_head")
            for t, gal, out in zip(tasks, gals, model.outputs)
        }
        return cls(encoder, decoders, tasks, classifier=classifier,
                   gals={t.name: gal for t, gal in zip(tasks, gals)}, **kwargs)


MODEL_CLASSES = {
    "great": GreatMTL,
    "equal": EqualWeightsMTL,
    "uncertainty": UncertaintyMTL,
    "gradnorm": GradNormMTL,
}


def build_multitask_network(input_shape, tasks, width):
    """The paper's CIFAR-10 multi-task network: ResNet-18 encoder and one decoder per task."""
    encoder = resnet18_encoder(input_shape, width, name="encoder")
    feature_shape = tuple(encoder.output.shape[1:])
    decoders = {}
    for t in tasks:
        if t.kind == "classification":
            decoders[t.name] = classification_decoder(feature_shape, t.units, name=f"{t.name}_decoder")
        else:
            decoders[t.name] = dense_decoder(feature_shape, t.units, width, name=f"{t.name}_decoder")
    return encoder, decoders


def build_mtl_model(method, input_shape=(32, 32, 1), tasks=CIFAR10_NOISY_TASKS, width=64,
                    gradnorm_alpha=0.6):
    """A multi-task model for `method` in METHODS, on the paper's network at `width`."""
    if method not in MODEL_CLASSES:
        raise GreatError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    encoder, decoders = build_multitask_network(input_shape, tasks, width)
    kwargs = {"name": f"mtl_{method}"}
    if method == "great":
        feature_shape = tuple(encoder.output.shape[1:])
        kwargs["classifier"] = task_classifier(feature_shape, len(tasks), width)
    if method == "gradnorm":
        kwargs["alpha"] = gradnorm_alpha
    return MODEL_CLASSES[method](encoder, decoders, tasks, **kwargs)


def compile_mtl(model, steps_per_epoch, epochs, learning_rate=1e-3):
    """The paper's optimisers: Adam with the poly multiplier for the network and, with the same
    policy, for the method's own weights and the task classifier (supplement, multi-task)."""
    def adam():
        return poly_adam(learning_rate, steps_per_epoch, epochs)

    extra = {"classifier_optimizer": adam()} if isinstance(model, GreatMTL) else {}
    model.compile(optimizer=adam(), weight_optimizer=adam(), **extra)
    return model
