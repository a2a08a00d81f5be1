"""Per-task gradients of the shared part, for methods that combine them (docs/design.md#mtl-methods).

Gradient-manipulating methods (PCGrad, MGDA, CAGrad, IMTL, Nash-MTL, ...) project, solve or
weight the task gradients. Under `MirroredStrategy` every replica holds only its share of each
task gradient, and projecting each replica's own share is a different algorithm: the global
gradients must be known before any nonlinear step. Two spaces, each exact:

- `space="shared"` (default): gradients with respect to the shared (encoder) parameters,
  flattened to a [T, P] matrix and all-reduced once (T x P floats per step). One backward pass
  through the decoders, then one from the feature to the parameters per task.
- `space="feature"` (LibMTL's rep_grad): gradients at the shared feature, [T, b, ...] per
  replica. Inner products over the global batch are sums of the replicas' inner products, so the
  exact global Gram matrix costs one all-reduce of T x T floats, and a combination sum_i w_i g_i
  with global weights is each replica's own share. One backward pass through the encoder.

Most methods only need the Gram matrix G G^T and return weights w: the update is sum_i w_i g_i
(`apply_weights`). A method that needs the vectors themselves (an EMA of gradients, say) reads
`matrix` (shared space only) and returns a vector (`apply_vector`).
"""

import tensorflow as tf

from great_tf.distribute import num_replicas, replica_sum
from great_tf.errors import GreatError
from great_tf.precision import scale, unscale


SPACES = ("shared", "feature")


def check_space(space):
    """`space` if TaskGradients knows it, else a one-line GreatError (methods call it in
    `__init__`, so a bad `--<method>-space` fails before any data is loaded)."""
    if space not in SPACES:
        raise GreatError(f"unknown gradient space {space!r}: use 'shared' (the shared "
                         f"parameters) or 'feature' (the shared feature, LibMTL's rep_grad)")
    return space


def flatten(tensors):
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], 0)


def unflatten(vector, like):
    sizes = [tf.size(t) for t in like]
    return [tf.reshape(part, tf.shape(t)) for part, t in zip(tf.split(vector, sizes), like)]


class TaskGradients:
    """The step's per-task gradients of the shared part, in `space` "shared" or "feature"."""

    def __init__(self, model, step, space="shared"):
        check_space(space)
        self.model, self.step, self.space = model, step, space
        # One pass through the decoders gives each task's gradient at its own copy of the feature
        # and each decoder's gradient of its own loss (`decoder_gradients`).
        grads = model.step_gradient(step, step.losses, list(step.heads) + model.task_variables,
                                    output_gradients=scale(tf.ones_like(step.losses), step.scale))
        heads, self._decoder_grads = grads[:len(step.heads)], grads[len(step.heads):]
        self.feature_grads = [unscale(g, step.scale, step.losses.dtype) for g in heads]
        if space == "shared":
            self.matrix = replica_sum(tf.stack([self._shared_gradient(g) for g in self.feature_grads]))
        else:
            self.matrix = None
            local = tf.stack([tf.reshape(g, [-1]) for g in self.feature_grads])
            self._gram = replica_sum(tf.matmul(local, local, transpose_b=True))

    def _shared_gradient(self, feature_grad):
        variables = self.model.shared_variables
        grads = self.step.tape.gradient(self.step.feature, variables,
                                        output_gradients=tf.cast(feature_grad, self.step.feature.dtype))
        return flatten([tf.cast(g, self.step.losses.dtype) for g in grads])

    def decoder_gradients(self, task_weights=None):
        """The decoders' gradients of sum_i w_i L_i (w = 1 by default), scaled for the main
        optimizer, without another pass through the decoders: a decoder's variables get gradient
        from its own task's loss only, so they are that task's gradients times w_i."""
        if task_weights is None:
            return list(self._decoder_grads)
        weights = tf.unstack(tf.stop_gradient(tf.convert_to_tensor(task_weights)))
        weighted, start = [], 0
        for w, task in zip(weights, self.model.tasks):
            count = len(self.model.decoders[task.name].trainable_variables)
            weighted += [None if g is None else g * tf.cast(w, g.dtype)
                         for g in self._decoder_grads[start:start + count]]
            start += count
        return weighted

    @property
    def num_tasks(self):
        return len(self.feature_grads)

    def gram(self):
        """[T, T] inner products of the global task gradients."""
        if self.space == "shared":
            return tf.matmul(self.matrix, self.matrix, transpose_b=True)
        return self._gram

    def norms(self):
        return tf.sqrt(tf.maximum(tf.linalg.diag_part(self.gram()), 0.0))

    # -- turning a combination into the encoder's gradients --------------------------------------
    def apply_weights(self, weights):
        """The encoder's gradients for the update sum_i w_i g_i (w the same on every replica)."""
        weights = tf.stop_gradient(tf.cast(weights, self.step.losses.dtype))
        if self.space == "shared":
            return self.apply_vector(tf.linalg.matvec(self.matrix, weights, transpose_a=True))
        combined = tf.add_n([w * g for w, g in zip(tf.unstack(weights), self.feature_grads)])
        grads = self.step.tape.gradient(
            self.step.feature, self.model.shared_variables,
            output_gradients=scale(tf.cast(combined, self.step.feature.dtype), self.step.scale))
        return grads

    def apply_vector(self, vector):
        """The encoder's gradients for a global update vector over the flattened shared
        parameters. The optimizer sums the replicas' gradients, so each gives 1/R of it."""
        if self.space != "shared":
            raise GreatError("a vector update needs gradients of the shared parameters: "
                             "use space='shared'")
        vector = vector / tf.cast(num_replicas(), vector.dtype)
        variables = self.model.shared_variables
        return [scale(tf.cast(g, v.dtype), self.step.scale)
                for g, v in zip(unflatten(vector, variables), variables)]
