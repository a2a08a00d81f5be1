"""Iterative FGSM (BIM; Kurakin et al. 2017), optionally from a random start
(docs/design.md#attacks)."""

import numpy as np
import tensorflow as tf

from great_tf.attacks.utils import (as_input, attack_labels, check_count, check_eps, check_norm,
                                    compiled_per_model, default_eps_iter, direction, project,
                                    random_start, resolve_ids, resolve_loss, signed_gradient)


@compiled_per_model
def iterate(model_fn, x, labels, eps, eps_iter, nb_iter, sign, clip_min, clip_max, loss_fn, start):
    """`nb_iter` signed steps from `start`, each projected onto the eps-ball and pixel range."""
    x_adv = project(start, x, eps, clip_min, clip_max)
    for _ in tf.range(nb_iter):
        step = sign * eps_iter * signed_gradient(model_fn, x_adv, labels, loss_fn)
        x_adv = project(x_adv + step, x, eps, clip_min, clip_max)
    return x_adv


def iterative_fgsm(model_fn, x, eps, eps_iter=None, nb_iter=10, norm=np.inf, y=None, targeted=False,
                   clip_min=0.0, clip_max=1.0, rand_init=False, seed=0, loss_fn=None, loss="ce",
                   example_ids=None):
    """`nb_iter` signed steps of `eps_iter` (default 2.5 * eps / nb_iter), each projected onto
    the eps-ball around x and [clip_min, clip_max]; `rand_init` starts from a uniform point of the
    ball, drawn per example from (seed, its id). `norm`: np.inf only; `loss`/`loss_fn` as in
    `fgsm`."""
    check_norm(norm)
    check_eps(eps, clip_min, clip_max)
    nb_iter = check_count("nb_iter", nb_iter)
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted)
    eps_iter = default_eps_iter(eps, nb_iter) if eps_iter is None else eps_iter
    start = x
    if rand_init:
        ids = resolve_ids(example_ids, x.shape[0])
        start = random_start(x, tf.constant(eps, tf.float32), seed, 0, ids)
    return iterate(model_fn, x, labels, tf.constant(eps, tf.float32), tf.constant(eps_iter, tf.float32),
                   tf.constant(nb_iter), direction(targeted), tf.constant(clip_min, tf.float32),
                   tf.constant(clip_max, tf.float32), resolve_loss(loss, loss_fn), start)
