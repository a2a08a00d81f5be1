"""SPSA (Uesato et al. 2018): a gradient-free iterative attack (docs/design.md#attacks).

It estimates the gradient of the margin loss from finite differences along random sign
directions, so a defense that obfuscates its gradient cannot mislead it.
"""

import tensorflow as tf

from great_tf.attacks.utils import (as_input, attack_labels, check_count, check_eps, check_positive,
                                    compiled_per_model, default_eps_iter, direction, margin_loss,
                                    per_example_uniform, project, resolve_ids)


@compiled_per_model
def _spsa(model_fn, x, labels, eps, eps_iter, nb_iter, sign, clip_min, clip_max, delta, num_samples,
          seed, ids):
    x_adv = x
    feature_shape = tf.shape(x)[1:]
    batch = tf.shape(x)[0]
    for i in tf.range(nb_iter):
        # num_samples Rademacher directions per example, [B, S, ...], drawn from (seed, i, id).
        u = per_example_uniform(seed, i, ids, tf.concat([[num_samples], feature_shape], 0))
        v = tf.where(u < 0.5, -1.0, 1.0)
        points = tf.concat([x_adv[:, None] + delta * v, x_adv[:, None] - delta * v], axis=1)
        flat = tf.reshape(points, tf.concat([[-1], feature_shape], 0))
        losses = margin_loss(tf.repeat(labels, 2 * num_samples), model_fn(flat))
        losses = tf.reshape(losses, [batch, 2, num_samples])
        slope = (losses[:, 0] - losses[:, 1]) / (2.0 * delta)  # [B, S]
        slope = tf.reshape(slope, tf.concat([[batch, num_samples], tf.ones_like(feature_shape)], 0))
        # A batch of one would let the broadcast lose the batch axis's static size: restore it.
        estimate = tf.ensure_shape(tf.reduce_mean(slope * v, axis=1), x.shape)
        x_adv = project(x_adv + sign * eps_iter * tf.sign(estimate), x, eps, clip_min, clip_max)
    return x_adv


def spsa(model_fn, x, eps, eps_iter=None, nb_iter=10, y=None, targeted=False, clip_min=0.0,
         clip_max=1.0, delta=0.01, num_samples=32, seed=0, example_ids=None):
    """Signed steps of `eps_iter` (default 2.5 * eps / nb_iter) along an SPSA estimate of the margin
    loss's gradient: 2 * num_samples forward passes per example and step, no backward pass.

    The margin of the target is the negated margin loss: a targeted attack descends it. Example k's
    directions at step i are drawn from (seed, i, example_ids[k]).
    """
    check_eps(eps, clip_min, clip_max)
    nb_iter = check_count("nb_iter", nb_iter)
    num_samples = check_count("num_samples", num_samples)
    delta = check_positive("delta", delta)
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted)
    eps_iter = default_eps_iter(eps, nb_iter) if eps_iter is None else eps_iter
    return _spsa(model_fn, x, labels, tf.constant(eps, tf.float32), tf.constant(eps_iter, tf.float32),
                 tf.constant(nb_iter), direction(targeted), tf.constant(clip_min, tf.float32),
                 tf.constant(clip_max, tf.float32), tf.constant(delta, tf.float32),
                 tf.constant(num_samples), tf.constant(seed, tf.int64), resolve_ids(example_ids, x.shape[0]))
