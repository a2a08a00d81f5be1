"""Layers that act only in the backward pass: the gradient-alignment layer and gradient reversal."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="great_tf")
class MinValue(keras.constraints.Constraint):
    """Clips a weight from below, keeping GAL scales strictly positive."""

    def __init__(self, min_value=1e-3):
        self.min_value = float(min_value)

    def __call__(self, w):
        return tf.maximum(w, tf.cast(self.min_value, w.dtype))

    def get_config(self):
        return {"min_value": self.min_value}


@keras.saving.register_keras_serializable(package="great_tf")
class GAL(keras.layers.Layer):
    """Gradient-alignment layer (Sinha et al. 2018, Sec. 2.3).

    Identity in the forward pass. In the backward pass it multiplies the incoming gradient
    element-wise by its weight `gamma`, a tensor of the input's shape without the batch axis,
    initialised to ones and kept >= `min_value` by a constraint (the paper relied on a low
    learning rate for positivity; a constraint cannot fail).

    Losses computed downstream give `gamma` no gradient: gamma learns only from the reversed
    task-classifier gradient that `great_tf.mtl.GreatMTL` computes. Because the forward pass is
    the identity, a model's outputs are the same with or without GALs, and they can be dropped at
    inference.
    """

    def __init__(self, min_value=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.min_value = float(min_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=tuple(input_shape[1:]),
            initializer="ones",
            constraint=MinValue(self.min_value),
            trainable=True,
        )

    def call(self, inputs):
        return _scale_backward(inputs, tf.convert_to_tensor(self.gamma.value))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "min_value": self.min_value}


@tf.custom_gradient
def _scale_backward(x, gamma):
    def grad(upstream):
        # No gradient for gamma: task losses must not move the alignment weights.
        return upstream * tf.cast(gamma, upstream.dtype), None

    return tf.identity(x), grad


@keras.saving.register_keras_serializable(package="great_tf")
class GradientReversal(keras.layers.Layer):
    """Identity forward; multiplies the gradient by `-scale` backward (Ganin & Lempitsky 2015).

    The reversal is itself differentiable, so second-order gradients through it are exact
    (docs/design.md#core).
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return reverse_gradient(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def reverse_gradient(x, scale=1.0):
    """Identity on `x` whose gradient is multiplied by `-scale` (a float or scalar tensor)."""

    @tf.custom_gradient
    def _reverse(x):
        def grad(upstream):
            factor = tf.convert_to_tensor(scale, dtype_hint=upstream.dtype)
            return -tf.cast(factor, upstream.dtype) * upstream

        return tf.identity(x), grad

    return _reverse(x)
