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
        if len({id(gal.input) for gal in gals}) != 1:
            raise GreatError("every GAL must take the same shared feature tensor as input")
        encoder = keras.Model(model.inputs, gals[0].input, name=f"{model.name}_encoder")
        decoders = {t.name: keras.Model(gal.output, out, name=f"{model.name}_{t.name}_head")
                    for t, gal, out in zip(tasks, gals, model.outputs)}
        return cls(encoder, decoders, tasks, classifier=classifier,
                   gals={t.name: gal for t, gal in zip(tasks, gals)}, **kwargs)
