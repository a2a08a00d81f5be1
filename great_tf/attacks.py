"""Adversarial attacks for evaluating defenses, usable on any Keras classifier.

Signatures follow cleverhans' TF2 functions: `attack(model_fn, x, eps, ..., y=None,
targeted=False, clip_min=0.0, clip_max=1.0)` where `model_fn` maps a batch of images to logits
(a Keras model works as is; it runs in inference mode). With `y=None` a non-targeted attack uses
the model's own prediction as the label to move away from (avoids label leaking); a targeted attack
needs `y`, the target classes.

Pixel scale: `eps`, `eps_iter`, `clip_min` and `clip_max` are in the units of the model's input.
Every great_tf data set yields images in [0, 1], so eps = 0.1 means 0.1 of the full pixel range
(25.5 on the 0-255 scale); the trainers state this in every table and take `--pixel-scale` to read
eps on another scale.

Every attack runs one batch as a compiled `tf.function` (the iterations are a `tf.while_loop`);
`batched` runs an attack over arrays of any size.

- `fgsm`: x + eps * sign(grad) (targeted: x - eps * sign(grad of the target's loss)), clipped.
- `iterative_fgsm` (BIM, Kurakin et al. 2017): k signed steps of `eps_iter`, each projected onto
  the eps-ball around x and the pixel range; `rand_init` starts from a uniform point of the ball.
- `pgd` (Madry et al. 2018): iterative FGSM from random starts, keeping per example the restart
  that hurts most.
- `spsa` (Uesato et al. 2018): gradient-free; estimates the gradient of a margin loss from finite
  differences along random sign directions, so a defense that obfuscates its gradient cannot
  mislead it.
"""

import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.precision import full_precision

# Under mixed precision (float16 logits) the attack losses are multiplied by this before their
# input gradient is taken, so that small float16 gradients do not underflow to 0 (a sign of 0 is
# no step: an attack weakened by rounding). Only the gradient's sign is used.
FLOAT16_LOSS_SCALE = 2.0**8


def default_eps_iter(eps, nb_iter):
    """Madry et al.'s step rule, 2.5 * eps / k: k steps can cross the ball and still refine."""
    return 2.5 * eps / nb_iter


def cross_entropy_sum(logits, labels):
    """Summed cross-entropy: its input gradient is every example's own gradient."""
    return tf.reduce_sum(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                       logits=full_precision(logits)))


def predicted_labels(model_fn, x):
    return tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)


def least_likely_labels(model_fn, x):
    """The least probable class per example: the paper's "Worst" target."""
    return tf.argmin(model_fn(x), axis=-1, output_type=tf.int32)


def random_wrong_labels(y, num_classes, seed=0):
    """A uniformly random class different from y per example: the paper's "Random" target."""
    y = tf.cast(y, tf.int32)
    shift = tf.random.stateless_uniform(tf.shape(y), [seed, 17], 1, num_classes, dtype=tf.int32)
    return (y + shift) % num_classes


def check_eps(eps, clip_min, clip_max):
    if eps < 0:
        raise GreatError(f"eps must be >= 0, got {eps}")
    if clip_min >= clip_max:
        raise GreatError(f"clip_min {clip_min} must be below clip_max {clip_max}")


def _labels(model_fn, x, y, targeted):
    if y is not None:
        return tf.cast(y, tf.int32)
    if targeted:
        raise GreatError("a targeted attack needs y, the target classes")
    return predicted_labels(model_fn, x)


def _direction(targeted):
    # Non-targeted: ascend the loss of y. Targeted: descend the loss of the target.
    return -1.0 if targeted else 1.0


def _signed_gradient(model_fn, x, labels, loss_fn):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model_fn(x)
        loss = loss_fn(full_precision(logits), labels)
        if logits.dtype == tf.float16:
            loss = loss * FLOAT16_LOSS_SCALE
    # A model that gives no gradient (fully obfuscated) leaves the gradient attacks where they are.
    return tf.sign(tape.gradient(loss, x, unconnected_gradients=tf.UnconnectedGradients.ZERO))


@tf.function(reduce_retracing=True)
def _fgsm(model_fn, x, labels, eps, direction, clip_min, clip_max, loss_fn):
    step = direction * eps * _signed_gradient(model_fn, x, labels, loss_fn)
    return tf.clip_by_value(x + step, clip_min, clip_max)


def fgsm(model_fn, x, eps, y=None, targeted=False, clip_min=0.0, clip_max=1.0, loss_fn=None):
    """Fast gradient sign method: clip(x + eps * sign(grad_x J(x, y))) (targeted: x - ...)."""
    check_eps(eps, clip_min, clip_max)
    x = tf.convert_to_tensor(x, tf.float32)
    labels = _labels(model_fn, x, y, targeted)
    return _fgsm(model_fn, x, labels, tf.constant(eps, tf.float32), _direction(targeted),
                 tf.constant(clip_min, tf.float32), tf.constant(clip_max, tf.float32),
                 loss_fn or cross_entropy_sum)


def _project(x_adv, x, eps, clip_min, clip_max):
    """Onto the L-inf eps-ball around x, then the pixel range (both convex boxes: exact)."""
    return tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), clip_min, clip_max)


@tf.function(reduce_retracing=True)
def _iterate(model_fn, x, labels, eps, eps_iter, nb_iter, direction, clip_min, clip_max, loss_fn,
             start):
    x_adv = _project(start, x, eps, clip_min, clip_max)
    for _ in tf.range(nb_iter):
        step = direction * eps_iter * _signed_gradient(model_fn, x_adv, labels, loss_fn)
        x_adv = _project(x_adv + step, x, eps, clip_min, clip_max)
    return x_adv


def _random_start(x, eps, seed):
    return x + tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps, dtype=x.dtype)


def iterative_fgsm(model_fn, x, eps, eps_iter=None, nb_iter=10, y=None, targeted=False,
                   clip_min=0.0, clip_max=1.0, rand_init=False, seed=0, loss_fn=None):
    """Iterative FGSM (BIM): `nb_iter` signed steps of `eps_iter` (default 2.5 * eps / nb_iter),
    each projected onto the eps-ball around x and [clip_min, clip_max]."""
    check_eps(eps, clip_min, clip_max)
    if nb_iter < 1:
        raise GreatError(f"nb_iter must be at least 1, got {nb_iter}")
    x = tf.convert_to_tensor(x, tf.float32)
    labels = _labels(model_fn, x, y, targeted)
    eps_iter = default_eps_iter(eps, nb_iter) if eps_iter is None else eps_iter
    start = _random_start(x, eps, [seed, 0]) if rand_init else x
    return _iterate(model_fn, x, labels, tf.constant(eps, tf.float32),
                    tf.constant(eps_iter, tf.float32), tf.constant(nb_iter), _direction(targeted),
                    tf.constant(clip_min, tf.float32), tf.constant(clip_max, tf.float32),
                    loss_fn or cross_entropy_sum, start)


def pgd(model_fn, x, eps, eps_iter=None, nb_iter=10, y=None, targeted=False, restarts=1,
        clip_min=0.0, clip_max=1.0, seed=0, loss_fn=None):
    """Projected gradient descent with a random start, repeated `restarts` times.

    Per example it keeps the restart with the highest loss of y (non-targeted) or the lowest loss
    of the target (targeted).
    """
    if restarts < 1:
        raise GreatError(f"restarts must be at least 1, got {restarts}")
    x = tf.convert_to_tensor(x, tf.float32)
    labels = _labels(model_fn, x, y, targeted)
    best, best_score = None, None
    for r in range(restarts):
        x_adv = iterative_fgsm(model_fn, x, eps, eps_iter, nb_iter, labels, targeted, clip_min,
                               clip_max, rand_init=True, seed=seed * 1000 + r, loss_fn=loss_fn)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=full_precision(model_fn(x_adv)))
        score = -per_example if targeted else per_example
        if best is None:
            best, best_score = x_adv, score
            continue
        better = score > best_score
        best = tf.where(better[:, None, None, None], x_adv, best)
        best_score = tf.where(better, score, best_score)
    return best


def margin_loss(logits, labels):
    """Per example max_{j != y} a_j - a_y: positive exactly when y is not the prediction."""
    logits = full_precision(logits)
    onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    true = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return other - true


@tf.function(reduce_retracing=True)
def _spsa(model_fn, x, labels, eps, eps_iter, nb_iter, direction, clip_min, clip_max, delta,
          num_samples, seed):
    batch = tf.shape(x)[0]
    shape = tf.shape(x)
    x_adv = x
    for i in tf.range(nb_iter):
        # Rademacher directions, num_samples per example, evaluated at x_adv +- delta * v.
        tiled_shape = tf.concat([[num_samples], shape], 0)
        signs = tf.random.stateless_uniform(tiled_shape, tf.stack([seed, i]), 0, 2, dtype=tf.int32)
        v = tf.cast(2 * signs - 1, x.dtype)
        points = tf.concat([x_adv[None] + delta * v, x_adv[None] - delta * v], 0)
        flat = tf.reshape(points, tf.concat([[-1], shape[1:]], 0))
        tiled_labels = tf.tile(labels, [2 * num_samples])
        losses = tf.reshape(margin_loss(model_fn(flat), tiled_labels), [2, num_samples, batch])
        slope = (losses[0] - losses[1]) / (2.0 * delta)  # [num_samples, batch]
        estimate = tf.reduce_mean(slope[:, :, None, None, None] * v, axis=0)
        x_adv = _project(x_adv + direction * eps_iter * tf.sign(estimate), x, eps, clip_min, clip_max)
    return x_adv


def spsa(model_fn, x, eps, eps_iter=None, nb_iter=10, y=None, targeted=False, clip_min=0.0,
         clip_max=1.0, delta=0.01, num_samples=32, seed=0):
    """Gradient-free iterative attack: signed steps along an SPSA estimate of the margin loss's
    gradient (2 * num_samples forward passes per example and step, no backward pass)."""
    check_eps(eps, clip_min, clip_max)
    x = tf.convert_to_tensor(x, tf.float32)
    labels = _labels(model_fn, x, y, targeted)
    eps_iter = default_eps_iter(eps, nb_iter) if eps_iter is None else eps_iter
    # The margin of the target is the negated margin loss: a targeted attack descends it.
    return _spsa(model_fn, x, labels, tf.constant(eps, tf.float32), tf.constant(eps_iter, tf.float32),
                 tf.constant(nb_iter), _direction(targeted), tf.constant(clip_min, tf.float32),
                 tf.constant(clip_max, tf.float32), tf.constant(delta, tf.float32),
                 tf.constant(num_samples), tf.constant(seed))


def batched(attack, model_fn, x, y=None, batch_size=256, **kwargs):
    """`attack(model_fn, x_batch, y=y_batch, **kwargs)` over arrays of any size, as a NumPy array."""
    out = []
    for start in range(0, len(x), batch_size):
        y_batch = None if y is None else np.asarray(y)[start:start + batch_size]
        out.append(np.asarray(attack(model_fn, x[start:start + batch_size], y=y_batch, **kwargs)))
    return np.concatenate(out, 0)


_predict = tf.function(predicted_labels, reduce_retracing=True)


def predict_labels(model_fn, x, batch_size=256):
    """The model's predicted class for every example, batched."""
    return np.concatenate([_predict(model_fn, tf.constant(x[s:s + batch_size])).numpy()
                           for s in range(0, len(x), batch_size)])


def accuracy(model_fn, x, y, batch_size=256):
    """Top-1 accuracy in % of `model_fn` on (x, y)."""
    return 100.0 * float(np.mean(predict_labels(model_fn, x, batch_size) == np.asarray(y)))
