"""What every attack shares: input checks, labels, losses, gradients, projection, per-example
random numbers, and running an attack over arrays of any size (docs/design.md#attacks).

Conventions, the same for every attack of the package:

- Inputs: `x` is a NumPy array or a `tf.Tensor` of any real dtype, cast to float32; every value
  must already lie in `[clip_min, clip_max]` (an image on 0-255 with the default [0, 1] range is
  an error, never silently clipped). `y` has one integer label per example.
- Losses follow cleverhans: `loss_fn(labels, logits)`, one value per example (a summed or mean
  loss works too: only the gradient's sign is used). Named losses: "ce" (cross-entropy), "margin"
  (max_{j != y} z_j - z_y) and "dlr" (the margin divided by z_pi1 - z_pi3, invariant to the
  logits' scale: Croce & Hein 2020). The margin and DLR losses do not saturate where a confident
  model's softmax rounds to one-hot and the cross-entropy gradient is exactly zero.
- Direction: a non-targeted attack ascends the loss of y; a targeted one descends the loss of the
  target class.
- Randomness: example k's random numbers are drawn from (seed, stream, example_ids[k]), so an
  example gets the same noise whatever batch it is in and `batched` equals one big batch.
"""

import functools
import inspect
import weakref

import numpy as np
import tensorflow as tf

from great_tf.contracts import are_probabilities
from great_tf.errors import GreatError
from great_tf.losses import sparse_ce
from great_tf.precision import full_precision

# Under mixed precision (float16 logits) the attack losses are multiplied by this before their
# input gradient is taken, so that small float16 gradients do not underflow to 0 (a sign of 0 is
# no step: an attack weakened by rounding). Only the gradient's sign is used.
FLOAT16_LOSS_SCALE = 2.0**8

def compiled_per_model(python_fn):
    """`python_fn(model_fn, ...)` compiled (`tf.function`), with one compiled function per model.

    Each model needs its own traces anyway; keeping them in separate functions stops TensorFlow
    from warning about "frequent retracing" when one evaluation attacks several models.
    """
    functions = weakref.WeakKeyDictionary()

    @functools.wraps(python_fn)
    def call(model_fn, *args):
        try:
            compiled = functions[model_fn]
        except (KeyError, TypeError):  # TypeError: a model_fn that cannot be weakly referenced
            compiled = tf.function(python_fn, reduce_retracing=True)
            try:
                functions[model_fn] = compiled
            except TypeError:
                pass
        return compiled(model_fn, *args)

    call.compiled_for = functions.get  # the compiled function of a model (None before its first call)
    return call


# -- arguments ------------------------------------------------------------------------------------


def default_eps_iter(eps, nb_iter):
    """Madry et al.'s step rule, 2.5 * eps / k: k steps can cross the ball and still refine."""
    return 2.5 * eps / nb_iter


def check_eps(eps, clip_min, clip_max):
    if not np.isfinite(eps) or eps < 0:
        raise GreatError(f"eps must be >= 0 and finite, got {eps}")
    if not clip_min < clip_max:
        raise GreatError(f"clip_min {clip_min} must be below clip_max {clip_max}")


def check_norm(norm):
    """The attacks are L-inf: `norm` is np.inf (cleverhans' argument; 1 and 2 are not supported)."""
    if norm != np.inf:
        raise GreatError(f"norm={norm!r} is not supported: great_tf's attacks are L-inf only, use norm=np.inf")


def check_count(name, value, minimum=1):
    """A whole-number argument (iterations, samples, restarts) of at least `minimum`."""
    if int(value) != value or value < minimum:
        raise GreatError(f"{name} must be a whole number >= {minimum}, got {value}")
    return int(value)


def check_positive(name, value):
    if not np.isfinite(value) or value <= 0:
        raise GreatError(f"{name} must be positive, got {value}")
    return float(value)


def as_input(x, clip_min, clip_max):
    """`x` as a float32 tensor with a batch axis, after checking it lies in [clip_min, clip_max].

    One rule for NumPy arrays and tensors of any real dtype: cast to float32, then check the
    range (an attack that clipped out-of-range pixels would return points far outside its eps-ball).
    """
    x = tf.convert_to_tensor(x)
    if not (x.dtype.is_floating or x.dtype.is_integer or x.dtype == tf.bool):
        raise GreatError(f"x must hold real numbers, got dtype {x.dtype.name}")
    x = tf.cast(x, tf.float32)
    if x.shape.rank is None or x.shape.rank < 2:
        raise GreatError(f"x must have a batch axis and at least one feature axis, got shape {x.shape}")
    if tf.size(x) == 0:
        return x
    low, high = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise GreatError("x contains NaN or infinite values")
    if low < clip_min or high > clip_max:
        raise GreatError(
            f"x has values in [{low:g}, {high:g}], outside the pixel range [clip_min, clip_max] = "
            f"[{clip_min:g}, {clip_max:g}]: scale the inputs to that range (e.g. x / 255) or pass "
            f"the range they are on as clip_min/clip_max")
    return x


def as_labels(y, x):
    """`y` as int32 labels, one per example of `x`."""
    y = tf.cast(tf.convert_to_tensor(y), tf.int32)
    if y.shape.rank != 1 or y.shape[0] != x.shape[0]:
        raise GreatError(f"y must hold one label per example: got shape {y.shape} for {x.shape[0]} examples")
    return y


def rows(values, x):
    """A per-example vector [B] shaped to broadcast against `x` of any rank ([B, 1, ..., 1])."""
    return tf.reshape(values, tf.concat([tf.shape(values), tf.ones([tf.rank(x) - 1], tf.int32)], 0))


# -- labels ---------------------------------------------------------------------------------------


def predicted_labels(model_fn, x):
    """The model's predicted class per example (one batch, a tensor)."""
    return tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)


def check_logits(logits):
    """Refuses probabilities where an attack needs logits (its losses read logits, a softmax of
    probabilities flattens them and the attack looks weaker than it is)."""
    if are_probabilities(logits):
        raise GreatError("model_fn gives probabilities (every output in [0, 1], every row summing "
                         "to 1), not logits: attack the logits, e.g. the model without its final "
                         "softmax")


def attack_labels(model_fn, x, y, targeted):
    """The labels an attack works with: `y` if given; else, non-targeted, the model's prediction
    (so that the true label does not leak into the attack). Checks once, on `x`, that `model_fn`
    gives logits."""
    logits = model_fn(x)
    check_logits(logits)
    if y is not None:
        return as_labels(y, x)
    if targeted:
        raise GreatError("a targeted attack needs y, the target classes")
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def direction(targeted):
    # Non-targeted: ascend the loss of y. Targeted: descend the loss of the target. A tensor, not a
    # Python float, so that the targeted and untargeted attacks share one trace.
    return tf.constant(-1.0 if targeted else 1.0, tf.float32)


def random_wrong_labels(y, num_classes, seed=0):
    """A uniformly random class different from y per example: the paper's "Random" target."""
    y = tf.cast(y, tf.int32)
    shift = tf.random.stateless_uniform(tf.shape(y), [seed, 17], 1, num_classes, dtype=tf.int32)
    return (y + shift) % num_classes


# -- losses ---------------------------------------------------------------------------------------


def ce_loss(labels, logits):
    """Cross-entropy per example."""
    return sparse_ce(labels, logits)


def _true_and_best_other(labels, logits):
    logits = full_precision(logits)
    onehot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    true = tf.reduce_sum(onehot * logits, axis=-1)
    # -inf, not a large constant, for the true class: exact at any logit scale.
    other = tf.reduce_max(tf.where(onehot > 0, tf.constant(-np.inf, logits.dtype), logits), axis=-1)
    return true, other


def margin_loss(labels, logits):
    """Per example max_{j != y} z_j - z_y: positive exactly when y is not the prediction."""
    true, other = _true_and_best_other(labels, logits)
    return other - true


def dlr_loss(labels, logits):
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3),
    with z_pi the sorted logits; unchanged when the logits are scaled or shifted."""
    top = tf.math.top_k(full_precision(logits), 3).values
    return margin_loss(labels, logits) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(labels, targets, logits):
    """Targeted DLR (APGD-T): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), to be maximised: it
    grows as the target's logit overtakes the true class's."""
    logits = full_precision(logits)
    top = tf.math.top_k(logits, 4).values
    true = tf.gather(logits, tf.cast(labels, tf.int32), batch_dims=1)
    target = tf.gather(logits, tf.cast(targets, tf.int32), batch_dims=1)
    return -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES = {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}
# Classes a loss needs: DLR divides by z_pi1 - z_pi3, the targeted DLR also reads z_pi4.
MIN_CLASSES = {"dlr": 3, "targeted dlr": 4}


def resolve_loss(loss="ce", loss_fn=None):
    """The loss function `loss_fn(labels, logits)` an attack ascends: `loss_fn` if given, else the
    named `loss` ("ce", "margin", "dlr") or `loss` itself if it is a function."""
    if loss_fn is not None:
        if loss not in ("ce", None):
            raise GreatError(f"give either loss={loss!r} or loss_fn, not both")
        return loss_fn
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise GreatError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}, or pass loss_fn")
    return LOSSES[loss]


def check_classes(loss_name, num_classes):
    needed = MIN_CLASSES.get(loss_name, 2)
    if num_classes is not None and num_classes < needed:
        raise GreatError(f"the {loss_name} loss needs at least {needed} classes, the model has {num_classes}")


def per_example(values, batch):
    """A loss's value per example, or None if the loss was reduced to one number."""
    values = tf.convert_to_tensor(values)
    return values if values.shape.rank == 1 and values.shape[0] == batch else None


# -- gradients and projection ---------------------------------------------------------------------


def loss_gradient(model_fn, x, objective):
    """(d sum(objective(logits)) / dx, logits, objective values) for one batch.

    A model that gives no gradient (fully obfuscated) gives a zero gradient, not an error: the
    gradient attacks then stay where they are, which is what the masking diagnostics detect.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model_fn(x)
        values = objective(full_precision(logits))
        total = tf.reduce_sum(values)
        if logits.dtype == tf.float16:
            total = total * FLOAT16_LOSS_SCALE
    grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return grad, logits, values


def signed_gradient(model_fn, x, labels, loss_fn):
    """sign(d loss_fn(labels, model_fn(x)) / dx), per example."""
    grad, _, _ = loss_gradient(model_fn, x, lambda logits: loss_fn(labels, logits))
    return tf.sign(grad)


def project(x_adv, x, eps, clip_min, clip_max):
    """Onto the L-inf eps-ball around x, then the pixel range (both convex boxes: exact)."""
    return tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), clip_min, clip_max)


# -- per-example random numbers -------------------------------------------------------------------


def resolve_ids(ids, batch):
    """Each example's identity for its random numbers: `ids` if given, else 0 .. batch - 1."""
    if ids is None:
        return tf.range(batch, dtype=tf.int64)
    ids = tf.cast(tf.reshape(tf.convert_to_tensor(ids), [-1]), tf.int64)
    if ids.shape[0] != batch:
        raise GreatError(f"example_ids must hold one id per example: got {ids.shape[0]} for {batch}")
    return ids


def per_example_uniform(seed, stream, ids, shape, minval=0.0, maxval=1.0):
    """[B, *shape] uniform numbers; row k depends only on (seed, stream, ids[k]).

    One stateless draw per example (a compiled loop over the batch): the price of results that do
    not depend on how a data set is split into batches.
    """
    seeds = tf.stack([tf.fill(tf.shape(ids), tf.cast(seed, tf.int64)),
                      tf.cast(stream, tf.int64) * 2**32 + ids], axis=1)
    return tf.map_fn(lambda s: tf.random.stateless_uniform(shape, s, minval, maxval), seeds,
                     fn_output_signature=tf.float32)


def random_start(x, eps, seed, stream, ids):
    """A uniform random point of the L-inf eps-ball around each example (Madry et al.'s start)."""
    return x + per_example_uniform(seed, stream, ids, tf.shape(x)[1:], -1.0, 1.0) * eps


# -- arrays of any size ---------------------------------------------------------------------------


def batched(attack, model_fn, x, y=None, batch_size=256, example_ids=None, **kwargs):
    """`attack(model_fn, x_batch, y=y_batch, **kwargs)` over arrays of any size, as a NumPy array.

    Attacks that draw random numbers get each example's id (default: its position in `x`), so
    the result does not depend on `batch_size`; pass `example_ids` when `x` is a subset of a
    larger set, to keep each example's noise.
    """
    n = len(x)
    if y is not None and len(y) != n:
        raise GreatError(f"y has {len(y)} labels for {n} examples: give one label per example")
    y = None if y is None else np.asarray(y)
    ids = np.arange(n) if example_ids is None else np.asarray(example_ids)
    if len(ids) != n:
        raise GreatError(f"example_ids has {len(ids)} ids for {n} examples")
    takes_ids = "example_ids" in inspect.signature(attack).parameters
    out = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        extra = {"example_ids": ids[start:stop]} if takes_ids else {}
        y_batch = None if y is None else y[start:stop]
        out.append(np.asarray(attack(model_fn, x[start:stop], y=y_batch, **kwargs, **extra)))
    return np.concatenate(out, 0)


_predict = compiled_per_model(predicted_labels)
_least_likely = compiled_per_model(lambda model_fn, x: tf.argmin(model_fn(x), axis=-1, output_type=tf.int32))


def _per_batch(fn, model_fn, x, batch_size):
    x = np.asarray(x) if not isinstance(x, tf.Tensor) else x
    return np.concatenate([fn(model_fn, tf.cast(x[s:s + batch_size], tf.float32)).numpy()
                           for s in range(0, len(x), batch_size)])


def predict_labels(model_fn, x, batch_size=256):
    """The model's predicted class for every example, batched (a NumPy array)."""
    return _per_batch(_predict, model_fn, x, batch_size)


def least_likely_labels(model_fn, x, batch_size=256):
    """The least probable class per example, batched: the paper's "Worst" target (a tensor)."""
    return tf.constant(_per_batch(_least_likely, model_fn, x, batch_size))


def correct(model_fn, x, y, batch_size=256):
    """Per example, whether `model_fn` classifies it correctly (a boolean NumPy array)."""
    return predict_labels(model_fn, x, batch_size) == np.asarray(y)


def accuracy(model_fn, x, y, batch_size=256):
    """Top-1 accuracy of `model_fn` on (x, y), in percent (0-100), the unit of every accuracy
    great_tf's functions return (Keras' own metrics in `fit` logs stay fractions)."""
    return 100.0 * float(np.mean(correct(model_fn, x, y, batch_size)))
