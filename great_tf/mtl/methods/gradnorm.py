"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018), norms at the last shared layer."""

import keras
import tensorflow as tf

from great_tf.distribute import num_replicas, replica_sum
from great_tf.errors import GreatError
from great_tf.mtl.base import InitialLosses, MultiTaskModel, TaskWeights
from great_tf.precision import loss_scale, scale, unscale


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


class GradNormMTL(MultiTaskModel):
    """Per step: the network descends sum_i w_i L_i; the weights descend
    sum_i |w_i ||grad_W L_i|| - mean_j(w_j ||grad_W L_j||) * r_i^alpha| (Eq. 2 of the paper), the
    target held constant, r_i the task's loss ratio L_i/L_i(0) over its mean; then they are
    clipped at 1e-3 and renormalised to sum to the number of tasks. W is the last shared layer's
    kernel (`shared_kernel`: a variable of the encoder or its path; default the last one).
    alpha = 0.6 on CIFAR-10 and 1.5 on NYUv2 (the GREAT paper's values).
    """

    method = "gradnorm"
    hyperparameters = {"alpha": 0.6}

    def __init__(self, encoder, decoders, tasks, alpha=0.6, shared_kernel=None, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        self.alpha = float(alpha)
        self.task_weights = TaskWeights(len(self.tasks), 1.0, name="task_weights")
        self.initial_losses = InitialLosses(len(self.tasks), name="initial_losses")
        if isinstance(shared_kernel, str):
            path = shared_kernel
            shared_kernel = next((v for v in encoder.variables if v.path == path), None)
            if shared_kernel is None:
                raise GreatError(f"GradNorm's shared_kernel {path!r} is no variable path of the "
                                 f"encoder: pass one of encoder.variables or its .path")
        self.shared_kernel = shared_kernel if shared_kernel is not None else last_kernel(encoder)
        if self.shared_kernel is None:
            raise GreatError("GradNorm needs a layer with a kernel in the encoder; pass shared_kernel")
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def constructor_arguments(self):
        # A variable is state, not configuration: the kernel is saved as its path in the encoder.
        return {**super().constructor_arguments(), "shared_kernel": self.shared_kernel.path}

    def optimizer_variables(self):
        return {"weight_optimizer": [self.task_weights.values]}

    def network_gradients(self, step):
        weights = self.task_weights.values
        grads = self.weighted_gradients(step, weights, self.network_variables + step.heads)
        n_vars = len(self.network_variables)
        # grad_W L_i from task i's gradient at the feature: a short backprop from f to W.
        kernel_grads = tf.stack([
            step.tape.gradient(step.feature, self.shared_kernel,
                               output_gradients=g / tf.cast(w, g.dtype))
            for g, w in zip(grads[n_vars:], tf.unstack(weights))
        ])
        # The T kernel gradients and the T losses summed over replicas in one all-reduce.
        kernel_grads, global_losses = replica_sum(
            [kernel_grads, tf.cast(step.losses, kernel_grads.dtype)])
        norms = unscale(tf.norm(tf.reshape(kernel_grads, [len(self.tasks), -1]), axis=1), step.scale)
        weight_grad = self.gradnorm_weight_gradient(weights, norms,
                                                    tf.cast(global_losses, step.losses.dtype),
                                                    loss_scale(self.weight_optimizer))
        # Every replica computed the same global gradient; the optimizer sums across replicas.
        self.weight_optimizer.apply([weight_grad / num_replicas()], [weights])
        self.renormalize_weights()
        for tracker, w in zip(self.weight_trackers, tf.unstack(self.task_weights.values)):
            tracker.update_state(w)
        return grads[:n_vars]

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
