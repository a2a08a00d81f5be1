"""FAMO, fast adaptive multitask optimization (Liu et al., NeurIPS 2023; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.distribute import num_replicas, replica_sum
from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel, TaskWeights
from great_tf.precision import loss_scale, scale

EPSILON = 1e-8  # the reference code's offset inside every log


def famo_loss_weights(logits, losses, min_losses):
    """The weights of sum_i w_i L_i whose gradient is that of FAMO's objective
    sum_i z_i log(L_i - L_i*) / c, z = softmax(logits), c = sum_i z_i / (L_i - L_i*) held
    constant: w_i = z_i / (c (L_i - L_i*)); they sum to 1."""
    z = tf.nn.softmax(logits)
    gaps = losses - min_losses + EPSILON
    c = tf.reduce_sum(z / gaps)
    return z / (c * gaps)


def famo_logit_gradient(logits, losses_before, losses_after, min_losses, decay):
    """The logits' gradient from the step's change of log losses (Algorithm 1):
    J_softmax(logits)^T delta with delta_i = log(L_i - L_i*) before the update minus after,
    plus the L2 term decay * logits (the reference code's Adam weight_decay, which adds it to
    the gradient)."""
    delta = (tf.math.log(losses_before - min_losses + EPSILON)
             - tf.math.log(losses_after - min_losses + EPSILON))
    z = tf.nn.softmax(logits)
    return z * (delta - tf.reduce_sum(z * delta)) + decay * logits


class FAMOMTL(MultiTaskModel):
    """The network descends sum_i z_i log(L_i - L_i*) / c (Liu et al. 2023, Algorithm 1;
    z = softmax(w), c = sum_i z_i / (L_i - L_i*) held constant, so each L_i gets weight
    z_i / (c (L_i - L_i*)) and the weights sum to 1), for every parameter, decoders included.
    After the network's update the same batch is evaluated again (one extra forward pass, as
    the reference code does) and the task logits w descend J_softmax(w)^T delta + gamma w,
    delta_i = log(L_i - L_i*) before minus after the update: w learns to give more weight to
    the tasks whose log loss fell least. L_i* = `min_losses` (0 by default, as the reference code
    uses them); the offset 1e-8 inside each log is theirs.

    Defaults (the paper's and the reference code's): logits start at 0; their optimizer is
    `compile(weight_optimizer=...)`, by default Adam with learning rate `weight_lr`=0.025 and no
    schedule (also under `compile_mtl`, which otherwise gives every optimizer the network's
    policy); `gamma`=1e-3, the logits' L2 regularisation (the reference's experiments use 1e-3
    on NYUv2, CelebA and QM9, 1e-2 on Cityscapes; LibMTL's default is 1e-3), added to their
    gradient as the reference's `Adam(weight_decay=gamma)` does, so any `weight_optimizer`
    keeps it. No gradient clipping: the reference experiments clip before the backward pass,
    which has no effect.

    The extra forward runs in training mode, as the reference code's (a PyTorch forward in
    train mode under `no_grad`), so its losses are measured like the step's own; BatchNorm's
    moving statistics therefore see the batch twice per step, as they do there.

    Cost per step: one backward pass (equal weights' cost), one extra forward pass, one
    all-reduce of T floats (the losses, for the weights) and one of 2T (the losses before and
    after the update, for the logits) besides the optimizer's.
    State: the logits (trainable by their own optimizer, whose slots are checkpointed with it).
    Weights logged as `train_weight_<task>`.
    """

    method = "famo"
    hyperparameters = {"gamma": 1e-3, "weight_lr": 0.025}

    def __init__(self, encoder, decoders, tasks, gamma=1e-3, weight_lr=0.025, min_losses=None,
                 **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if float(gamma) < 0 or float(weight_lr) <= 0:
            raise GreatError(f"famo needs gamma >= 0 and weight_lr > 0, got {gamma} and {weight_lr}")
        self.gamma = float(gamma)
        self.weight_lr = float(weight_lr)
        n = len(self.tasks)
        self.min_losses = tuple(float(m) for m in (min_losses or [0.0] * n))
        if len(self.min_losses) != n:
            raise GreatError(f"famo: min_losses has {len(self.min_losses)} values for {n} tasks")
        self.logits = TaskWeights(n, 0.0, name="famo_logits")
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def optimizer_variables(self):
        return {"weight_optimizer": [self.logits.values]}

    def method_optimizers(self):
        return {"weight_optimizer": keras.optimizers.Adam(self.weight_lr)}

    def minimum_losses(self, dtype):
        return tf.constant(self.min_losses, dtype)

    def network_gradients(self, step):
        losses = self.global_losses(step)
        logits = tf.cast(self.logits.values, losses.dtype)
        weights = famo_loss_weights(logits, losses, self.minimum_losses(losses.dtype))
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.weighted_gradients(step, weights)

    def after_update(self, step):
        """The logits' step from the same batch's losses after the network's update."""
        _, _, outputs = self.forward(step.x, training=True)
        after = self.replica_losses(self.per_example_losses(step.y, outputs), step.global_batch)
        # One all-reduce for both: the losses before (again; T floats) and after the update.
        both = replica_sum(tf.stack([tf.stop_gradient(step.losses), tf.cast(after, step.losses.dtype)]))
        logits = self.logits.values
        gradient = famo_logit_gradient(tf.cast(logits, both.dtype), both[0], both[1],
                                       self.minimum_losses(both.dtype), self.gamma)
        # Every replica computed the same global gradient; the optimizer sums across replicas.
        gradient = scale(tf.cast(gradient, logits.dtype) / num_replicas(),
                         loss_scale(self.weight_optimizer))
        self.weight_optimizer.apply([gradient], [logits])
