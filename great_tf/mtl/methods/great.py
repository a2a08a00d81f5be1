"""GREAT for multi-task learning (Sinha et al. 2018, Algorithm 3; docs/design.md#multi-task)."""

import keras
import tensorflow as tf

from great_tf.core import classify_gradients
from great_tf.errors import GreatError
from great_tf.layers import GAL
from great_tf.losses import replica_mean, sparse_ce
from great_tf.mtl.base import InitialLosses, MultiTaskModel
from great_tf.precision import full_precision, loss_scale, rescale, scale, unscale


class GreatMTL(MultiTaskModel):
    """One step: (1) task losses normalised by their first-batch values, C_i = J_i / C_i^0;
    (2) decoders updated with their own dC_i, the encoder with sum_i gamma_i * g_i (the GALs scale
    the gradients in the backward pass), g_i = dC_i/df per example; (3) the task classifier
    learns to classify gamma_i * g_i as task i, and (4) each GAL receives its reversed gradient
    -dC'/dgamma_i, both from one backward pass through `classify_gradients` with g_i held
    constant (the first-order update of Algorithm 3).

    Optimizers: `optimizer` (network), `weight_optimizer` (GALs), `classifier_optimizer`.
    """

    method = "great"

    def __init__(self, encoder, decoders, tasks, classifier=None, gals=None, gal_min_value=1e-3,
                 **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.gal_min_value = float(gal_min_value)
        feature_shape = tuple(encoder.output.shape[1:])
        if gals is None:
            gals = {t.name: GAL(gal_min_value, name=f"gal_{t.name}") for t in self.tasks}
        self.gals = {t.name: gals[t.name] for t in self.tasks}
        for gal in self.gals.values():
            if not gal.built:
                gal.build((None,) + feature_shape)
        if classifier is None:
            from great_tf.models import task_classifier

            classifier = task_classifier(feature_shape, len(self.tasks), width=feature_shape[-1] // 8)
        self.classifier = classifier
        self.initial_losses = InitialLosses(len(self.tasks), name="initial_losses")
        self.classifier_loss_tracker = self.track(keras.metrics.Mean(name="train_task_classifier_loss"))
        self.classifier_accuracy = self.track(
            keras.metrics.SparseCategoricalAccuracy(name="train_task_classifier_accuracy"))

    @classmethod
    def default_components(cls, feature_shape, tasks, width):
        from great_tf.models import task_classifier

        return {"classifier": task_classifier(feature_shape, len(tasks), width)}

    def head_inputs(self, feature):
        return [self.gals[t.name](feature) for t in self.tasks]

    @property
    def gammas(self):
        return [gal.gamma for gal in self.gals.values()]

    def optimizer_variables(self):
        return {"weight_optimizer": self.gammas,
                "classifier_optimizer": self.classifier.trainable_variables}

    def network_gradients(self, step):
        initial = self.initial_losses.observe(self.global_losses(step))
        grads = self.weighted_gradients(step, 1.0 / initial, self.network_variables + step.heads)
        n_vars = len(self.network_variables)
        # Loss scale undone (mixed precision), then from the global-batch mean back to each
        # example's own gradient.
        task_grads = [unscale(g, step.scale) for g in grads[n_vars:]]
        task_grads = [g * tf.cast(step.global_batch, g.dtype) for g in task_grads]
        self.alignment_step(task_grads, step.global_batch)
        return grads[:n_vars]

    def alignment_step(self, task_grads, global_batch):
        """Trains the task classifier on gamma_i * g_i and the GALs against it, in one pass."""
        gammas = self.gammas
        labels = tf.concat([tf.fill([tf.shape(g)[0]], i) for i, g in enumerate(task_grads)], 0)
        with tf.GradientTape() as tape:
            aligned = tf.concat(
                [gamma * tf.stop_gradient(tf.cast(g, gamma.dtype)) for gamma, g in zip(gammas, task_grads)], 0)
            aligned = tf.cast(aligned, self.classifier.compute_dtype)
            logits = classify_gradients(self.classifier, aligned, alpha=1.0)
            per_example = sparse_ce(labels, logits)
            loss = replica_mean(per_example, global_batch * len(task_grads))
            classifier_scale = loss_scale(self.classifier_optimizer)
            loss = scale(loss, classifier_scale)
        classifier_vars = self.classifier.trainable_variables
        grads = tape.gradient(loss, classifier_vars + gammas)
        # The GALs' optimizer may use another loss scale than the classifier's.
        gamma_grads = rescale(grads[len(classifier_vars):], classifier_scale,
                              loss_scale(self.weight_optimizer))
        self.classifier_optimizer.apply(grads[: len(classifier_vars)], classifier_vars)
        self.weight_optimizer.apply(gamma_grads, gammas)  # already reversed: the GALs ascend C'
        self.classifier_loss_tracker.update_state(per_example)
        self.classifier_accuracy.update_state(labels, full_precision(logits))

    @classmethod
    def from_functional(cls, model, tasks, classifier=None, **kwargs):
        """GREAT on a user's functional model that holds one `GAL` per task.

        Task `name` trains the output named `name`: its key when the model's outputs are a dict,
        else the name of the layer that gives it (`model.output_names`). Every GAL must read the
        same shared feature, and each task's output must depend on exactly one GAL, its own. The
        model's own layers and GAL weights are reused, so training this wrapper trains `model`.
        """
        gals = [layer for layer in model.layers if isinstance(layer, GAL)]
        tasks = tuple(tasks)
        if len(gals) != len(tasks) or len(model.outputs) != len(tasks):
            raise GreatError(
                f"the model has {len(gals)} GAL layers and {len(model.outputs)} outputs for "
                f"{len(tasks)} tasks: put one GAL between the shared feature and each task's head")
        if len({id(gal.input) for gal in gals}) != 1:
            raise GreatError("every GAL must take the same shared feature tensor as input")
        outputs = outputs_by_name(model)
        encoder = keras.Model(model.inputs, gals[0].input, name=f"{model.name}_encoder")
        decoders, task_gals = {}, {}
        for t in tasks:
            if t.name not in outputs:
                raise GreatError(f"the model has no output named {t.name!r} for task {t.name!r}: its "
                                 f"outputs are {', '.join(map(repr, outputs))}; name each task's "
                                 f"output layer (or its key in a dict of outputs) after the task")
            upstream = [gal for gal in gals if depends_on(outputs[t.name], gal)]
            if len(upstream) != 1:
                raise GreatError(f"the output {t.name!r} depends on {len(upstream)} GAL layers: "
                                 f"each task's head must read the shared feature through one GAL")
            task_gals[t.name] = upstream[0]
            decoders[t.name] = keras.Model(upstream[0].output, outputs[t.name],
                                           name=f"{model.name}_{t.name}_head")
        return cls(encoder, decoders, tasks, classifier=classifier, gals=task_gals, **kwargs)


def outputs_by_name(model):
    """{name: output tensor} of a functional model: the keys of a dict of outputs, else the names
    of the layers that give them."""
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        return dict(struct)
    return dict(zip(model.output_names, model.outputs))


def depends_on(tensor, layer):
    """Whether the symbolic `tensor` is computed from an output of `layer` (a walk up its graph)."""
    seen, todo = set(), [tensor]
    while todo:
        t = todo.pop()
        operation, node_index, _ = t._keras_history
        if operation is layer:
            return True
        if (id(operation), node_index) in seen:
            continue
        seen.add((id(operation), node_index))
        todo.extend(operation._inbound_nodes[node_index].input_tensors)
    return False
