"""Projected gradient descent with random restarts (Madry et al. 2018; docs/design.md#attacks)."""

import numpy as np
import tensorflow as tf

from great_tf.attacks.iterative_fgsm import iterate
from great_tf.attacks.utils import (as_input, attack_labels, ce_loss, check_count, check_eps, check_norm,
                                    default_eps_iter, direction, per_example, random_start,
                                    resolve_ids, resolve_loss, rows)
from great_tf.errors import GreatError


def pgd(model_fn, x, eps, eps_iter=None, nb_iter=10, norm=np.inf, y=None, targeted=False, restarts=1,
        clip_min=0.0, clip_max=1.0, seed=0, loss_fn=None, loss="ce", example_ids=None):
    """Iterative FGSM from `restarts` random starts of the eps-ball (`norm`: np.inf only).

    Per example it keeps a restart that succeeded (misclassified for a non-targeted attack, the
    target predicted for a targeted one) if there is one, and among those, or if none succeeded,
    the restart with the highest loss of y (non-targeted) or lowest loss of the target (targeted).
    Restart r of example k starts from noise drawn from (seed, r, example_ids[k]).
    """
    if int(restarts) != restarts or restarts < 1:
        raise GreatError(f"restarts must be at least 1, got {restarts}")
    check_norm(norm)
    check_eps(eps, clip_min, clip_max)
    nb_iter = check_count("nb_iter", nb_iter)
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted)
    loss_fn = resolve_loss(loss, loss_fn)
    ids = resolve_ids(example_ids, x.shape[0])
    eps_iter = default_eps_iter(eps, nb_iter) if eps_iter is None else eps_iter
    constants = [tf.constant(v, tf.float32) for v in (eps, eps_iter)]
    sign = direction(targeted)
    best = None
    for r in range(int(restarts)):
        start = random_start(x, constants[0], seed, r, ids)
        x_adv = iterate(model_fn, x, labels, *constants, tf.constant(nb_iter), sign,
                        tf.constant(clip_min, tf.float32), tf.constant(clip_max, tf.float32), loss_fn, start)
        success, value = _success_and_loss(model_fn, x_adv, labels, targeted, loss_fn)
        if best is None:
            best, best_success, best_value = x_adv, success, value
            continue
        # Success first; the loss only breaks ties between restarts that agree on it.
        better = (success & ~best_success) | ((success == best_success) & (value > best_value))
        best = tf.where(rows(better, x_adv), x_adv, best)
        best_success = best_success | success
        best_value = tf.where(better, value, best_value)
    return best


def _success_and_loss(model_fn, x_adv, labels, targeted, loss_fn):
    """Per example: did the attack succeed, and its loss in the attack's direction (higher is
    better; cross-entropy if `loss_fn` does not give one value per example)."""
    logits = model_fn(x_adv)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    success = tf.equal(predicted, labels) if targeted else tf.not_equal(predicted, labels)
    values = per_example(loss_fn(labels, logits), x_adv.shape[0])
    values = ce_loss(labels, logits) if values is None else tf.cast(values, tf.float32)
    return success, -values if targeted else values
