"""What a great_tf model needs of a user's network, checked once at construction (one-line errors).

Every loss in great_tf reads logits: the cross-entropies, the input gradients of the defense and
of distillation, the discriminator's binary cross-entropy. A network that ends in a softmax or a
sigmoid trains without an error, on a flattened loss (a softmax teacher's soft targets are nearly
uniform; a sigmoid discriminator's "logits" are all positive, so its accuracy reads 0.0 or 1.0).
The checks read the network's last layer and, where its input shape is known, its outputs on a
small random batch (the test of `great_tf.robustness.check_outputs_are_logits`).
"""

import numpy as np

from great_tf.errors import GreatError

PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


def are_probabilities(outputs, atol=1e-3):
    """True if outputs [..., classes] are a softmax's, not logits: two classes or more, every
    value in [0, 1] and every row summing to 1."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim < 2 or outputs.shape[-1] < 2 or outputs.size == 0:
        return False
    in_unit = outputs.min() >= 0.0 and outputs.max() <= 1.0
    return bool(in_unit and np.allclose(outputs.sum(axis=-1), 1.0, atol=atol))


def symbolic(network, side):
    """A functional or Sequential network's symbolic `inputs` or `outputs`; [] for any other
    (a subclassed model has none, an unbuilt Sequential raises)."""
    try:
        return list(getattr(network, side, None) or [])
    except (AttributeError, ValueError):
        return []


def final_activation(network):
    """The name of the activation the network's last layer applies ('softmax', 'sigmoid', ...),
    or None (no activation, or a network whose last layer is not known: a subclassed model)."""
    outputs = symbolic(network, "outputs")
    if len(outputs) != 1:
        return None
    layer = outputs[0]._keras_history.operation
    if symbolic(layer, "outputs") and layer is not network:  # a nested model ends the network
        return final_activation(layer)
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return None if name in (None, "linear") else name


def output_shape(network):
    """The per-example output shape of a functional or Sequential network, else None."""
    outputs = symbolic(network, "outputs")
    return tuple(outputs[0].shape[1:]) if len(outputs) == 1 else None


def input_shape(network):
    """The per-example input shape of a functional or Sequential network, else None."""
    inputs = symbolic(network, "inputs")
    if len(inputs) != 1 or None in inputs[0].shape[1:]:
        return None
    return tuple(inputs[0].shape[1:])


def outputs_probabilities(network, shape=None, batch=2):
    """True if the network's outputs (inference mode) on a random batch are probability rows.
    The batch has the network's own input shape, or per-example `shape` where it has none (a
    subclassed model). False where that cannot be known: one output unit, or no shape. A local
    generator draws the batch: the global random state is left alone."""
    shape = input_shape(network) or shape
    if shape is None or (output_shape(network) or (2,))[-1] < 2:
        return False
    x = np.random.default_rng(0).random((batch, *shape)).astype(network.compute_dtype)
    outputs = network(x, training=False)
    return outputs.shape[-1] > 1 and are_probabilities(outputs)


def require_logits(network, role, shape=None):
    """Refuses a network that ends in a softmax or a sigmoid, or outputs probability rows on a
    random batch (`shape`: the per-example shape of the data a subclassed network reads)."""
    activation = final_activation(network)
    if activation in PROBABILITY_ACTIVATIONS:
        what = f"ends in a {activation}"
    elif outputs_probabilities(network, shape):
        what = "outputs probabilities (every row sums to 1)"
    else:
        return
    raise GreatError(f"{role} ({network.name}) {what}: great_tf's losses need logits; drop the "
                     f"final activation (e.g. Dense(units) without activation=...)")


def require_one_logit(network, role):
    """Refuses a network that does not output one logit per example (shape (batch, 1))."""
    require_one_unit(network, role, output_shape(network))
    require_logits(network, role)


def require_one_unit(network, role, shape):
    """Refuses a per-example output `shape` (None: not known) with more than one value."""
    if shape is not None and int(np.prod(shape)) != 1:
        raise GreatError(f"{role} ({network.name}) outputs shape {tuple(shape)} per example: it "
                         f"needs one output unit, a logit (e.g. a last layer Dense(1))")
