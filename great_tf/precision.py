"""Mixed precision (`mixed_float16`) for the custom train steps: dynamic loss scaling by hand.

Set the policy with `use_mixed_precision(True)` BEFORE the models are built: layers then compute
in float16 and keep float32 master weights. Under that policy every optimizer of a model is a
`LossScaleOptimizer` (`loss_scaled`), whose scale variables are checkpointed with the optimizer's
(`optimizer.variables`). Each train step then

- computes its losses in float32 (outputs are cast before the loss),
- multiplies every loss by the scale of the optimizer that receives its gradient (`scale`), so
  small float16 gradients do not underflow; `optimizer.apply` divides the gradients by that
  scale, skips the update if any is not finite and adapts the scale;
- divides by the scale that produced it (`unscale`) every gradient that is not given to an
  optimizer but used as a value: task gradients fed to a classifier, input gradients fed to an
  auxiliary network or discriminator, GradNorm's gradient norms.

The scale is read with `loss_scale(optimizer)` before `optimizer.apply` can change it. For a plain
optimizer it is None and `scale`/`unscale` return their input unchanged: the float32 path is the
same computation as without this module.

One backward pass whose gradients go to two optimizers is scaled by one of them and the other's
gradients are `rescale`d. An overflow skips the step and halves the scale, so the first steps of a
run may be skipped while the scale (2^15 at first) comes down to what the network tolerates.
"""

import keras
import tensorflow as tf

MIXED = "mixed_float16"


def use_mixed_precision(enabled):
    """Sets the global Keras dtype policy: mixed_float16 if `enabled`, else float32."""
    keras.mixed_precision.set_global_policy(MIXED if enabled else "float32")


def is_mixed(model=None):
    """True if `model` (default: the global policy) computes in float16 with float32 weights."""
    policy = model.dtype_policy if model is not None else keras.mixed_precision.global_policy()
    return policy.name == MIXED


@keras.saving.register_keras_serializable(package="great_tf")
class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, with one decision per step across replicas.

    Keras 3.15 decides whether to skip a step from the first replica's gradients only (its
    comment assumes they were all-reduced already, but `apply` receives each replica's own), so
    an overflow on another replica would be applied and make the weights NaN. Here the step is
    skipped when any replica's gradients are not finite.
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        finite_replicas = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(finite, tf.float32))
        return tf.equal(finite_replicas, float(context.num_replicas_in_sync))


def loss_scaled(optimizer, model):
    """`optimizer` (an instance or identifier), wrapped in a `LossScaleOptimizer` if `model` runs
    in mixed_float16 and it is not one already. Use it for `model.optimizer` too, before
    `keras.Model.compile` (which would wrap it in Keras' own class)."""
    optimizer = keras.optimizers.get(optimizer)
    if is_mixed(model) and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = LossScaleOptimizer(optimizer)
    return optimizer


def loss_scale(optimizer):
    """The optimizer's current loss scale (a float32 tensor), or None for a plain optimizer.

    Read it before `optimizer.apply`, which may halve or double it.
    """
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    if not optimizer.built:
        return tf.constant(optimizer.initial_scale, tf.float32)
    return tf.identity(optimizer.dynamic_scale.value)


def scale(loss, factor):
    """`loss * factor` (a loss to differentiate for a loss-scaled optimizer); `loss` if None."""
    return loss if factor is None else loss * tf.cast(factor, loss.dtype)


def unscale(value, factor, dtype=None):
    """`value / factor` computed in float32, then cast to `dtype` (default float32): a gradient
    of a scaled loss brought back to its true value. With `factor` None: `value`, cast to `dtype`
    if given (a no-op in float32)."""
    if value is None:
        return None
    if factor is not None:
        value = tf.cast(value, tf.float32) / factor
        dtype = dtype or tf.float32
    return value if dtype is None else tf.cast(value, dtype)


def rescale(grads, from_factor, to_factor):
    """Gradients of a loss scaled by `from_factor`, as if it had been scaled by `to_factor`: for
    one backward pass whose gradients go to two optimizers with different scales."""
    if from_factor is None and to_factor is None:
        return grads
    return [None if g is None else scale(unscale(g, from_factor, g.dtype), to_factor) for g in grads]


def full_precision(tensor):
    """A float16 (or bfloat16) `tensor` cast to float32, for computing a loss; any other tensor
    (float32, float64) unchanged."""
    tensor = tf.convert_to_tensor(tensor)
    if tensor.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(tensor, tf.float32)
    return tensor
