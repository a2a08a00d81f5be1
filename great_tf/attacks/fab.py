"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), L-inf, as run by
standard AutoAttack (docs/design.md#attacks).

FAB looks for the adversarial point CLOSEST to x, not for the highest loss in the eps-ball. Per
target t (the 2nd, 3rd, ... most likely class of the clean input, as in APGD-T) and iteration:

- Linearise the boundary between the true class y and t at the current point x_k:
  f(z) = z_t - z_y is about f(x_k) + grad f(x_k) . (z - x_k), so the boundary is the hyperplane
  {z : w . z + b = 0} with w = grad f(x_k), b = f(x_k) - w . x_k.
- Project both x_k and the clean x onto that hyperplane intersected with the pixel box, in
  L-inf (`linf_boundary_projection`): steps d_k and d_0.
- Step to a convex combination biased towards x: x_{k+1} = (1 - alpha)(x_k + eta d_k) +
  alpha (x + eta d_0), alpha = min(|d_k| / (|d_k| + |d_0|), alpha_max), clipped to the box
  (eta = 1.05 overshoots the linearised boundary a little).
- If x_{k+1} is misclassified, keep it when it is the closest so far and move back towards x:
  x_{k+1} = x + beta (x_{k+1} - x).

An example counts as broken if the closest misclassified point lies within eps of x. The defaults
are AutoAttack's (100 iterations, 1 restart, alpha_max 0.1, eta 1.05, beta 0.9, 9 targets); its
first restart starts at x itself, each further one at x plus uniform noise scaled so its largest
coordinate is eps / 2. As there, targets and restarts run only on the examples not yet broken.
"""

import numpy as np
import tensorflow as tf

from great_tf.attacks.utils import (FLOAT16_LOSS_SCALE, as_input, attack_labels, check_count,
                                    check_eps, check_positive, compiled_per_model, loss_gradient,
                                    per_example_uniform, resolve_ids, rows)
from great_tf.errors import GreatError

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9
_TINY = 1e-8  # AutoAttack's floor on a step's norm, so alpha is defined at a fixed point


def linf_boundary_projection(t, w, b, lo, hi):
    """Per row of `t` [B, n]: the step d of least L-inf norm with w . (t + d) + b = 0 and
    lo <= t + d <= hi (`w` [B, n], `b` [B], `lo`/`hi` numbers or [B, n]). Where the box does not
    reach the hyperplane, the step to the box's corner closest to it.

    Each coordinate moves towards the hyperplane (sign -(w . t + b) w_i) by min(delta, room_i),
    room_i being what the box leaves it that way. The residual removed, g(delta) =
    sum_i |w_i| min(delta, room_i), is piecewise linear and nondecreasing in delta with kinks at
    the rooms; sorting them gives the segment where g reaches |w . t + b|, and delta in closed form.
    """
    residual = tf.reduce_sum(w * t, axis=1) + b
    direction = -tf.sign(residual)[:, None] * tf.sign(w)
    lo, hi = lo + tf.zeros_like(t), hi + tf.zeros_like(t)
    room = tf.maximum(tf.where(direction > 0, hi - t, t - lo), 0.0)
    weight = tf.abs(w) * tf.abs(direction)
    need = tf.abs(residual)

    order = tf.argsort(room, axis=1, stable=True)
    sorted_room, sorted_weight = tf.gather(room, order, batch_dims=1), tf.gather(weight, order, batch_dims=1)
    removed_below = tf.cumsum(sorted_weight * sorted_room, axis=1)  # by coordinates with room <= kink
    weight_below = tf.cumsum(sorted_weight, axis=1)
    total_weight = weight_below[:, -1:]
    g_at_kinks = removed_below + sorted_room * (total_weight - weight_below)
    kink = tf.reduce_sum(tf.cast(g_at_kinks < need[:, None], tf.int32), axis=1)  # the segment's end
    feasible = kink < tf.shape(t)[1]
    # On the segment before kink k: g(delta) = removed_below[k-1] + delta * (total - weight_below[k-1]).
    pad = tf.zeros_like(need)[:, None]
    removed_before = tf.gather(tf.concat([pad, removed_below], 1), kink, batch_dims=1)
    weight_before = tf.gather(tf.concat([pad, weight_below], 1), kink, batch_dims=1)
    delta = (need - removed_before) / tf.maximum(total_weight[:, 0] - weight_before, 1e-30)
    delta = tf.where(feasible, delta, np.inf)
    return direction * tf.minimum(delta[:, None], room)


def _flat(v):
    return tf.reshape(v, [tf.shape(v)[0], -1])


def _linf(d):
    return tf.reduce_max(tf.abs(d), axis=1)


def _target_gap(labels, targets, logits):
    """z_t - z_y: positive once the target class beats the true one."""
    return (tf.gather(logits, targets, batch_dims=1) - tf.gather(logits, labels, batch_dims=1))


@compiled_per_model
def _fab_run(model_fn, x, labels, targets, start, clip_min, clip_max, nb_iter, alpha_max, eta, beta):
    """One FAB-T run from `start`: (closest misclassified point found, its L-inf distance to x,
    inf where none was found)."""
    x0 = _flat(x)

    def boundary(x_k):
        """(w, b) of the linearised boundary z_t - z_y = 0 at x_k."""
        grad, logits, gap = loss_gradient(model_fn, tf.reshape(x_k, tf.shape(x)),
                                          lambda z: _target_gap(labels, targets, z))
        if logits.dtype == tf.float16:  # loss_gradient scaled the loss: FAB needs the gradient's size
            grad = grad / FLOAT16_LOSS_SCALE
        w = _flat(grad)
        return w, tf.cast(gap, tf.float32) - tf.reduce_sum(w * x_k, axis=1)

    x_k, best = _flat(start), x0
    best_norm = tf.fill([tf.shape(x0)[0]], tf.constant(np.inf, tf.float32))
    for _ in tf.range(nb_iter):
        w, b = boundary(x_k)
        d_k = linf_boundary_projection(x_k, w, b, clip_min, clip_max)
        d_0 = linf_boundary_projection(x0, w, b, clip_min, clip_max)
        a_k, a_0 = tf.maximum(_linf(d_k), _TINY), tf.maximum(_linf(d_0), _TINY)
        alpha = tf.minimum(a_k / (a_k + a_0), alpha_max)[:, None]
        x_k = tf.clip_by_value((1.0 - alpha) * (x_k + eta * d_k) + alpha * (x0 + eta * d_0),
                               clip_min, clip_max)
        logits = model_fn(tf.reshape(x_k, tf.shape(x)))
        wrong = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
        norm = _linf(x_k - x0)
        closer = wrong & (norm < best_norm)
        best = tf.where(closer[:, None], x_k, best)
        best_norm = tf.where(closer, norm, best_norm)
        x_k = tf.where(wrong[:, None], x0 + beta * (x_k - x0), x_k)
    return tf.reshape(best, tf.shape(x)), best_norm


def fab_start(x, eps, seed, stream, ids, clip_min, clip_max):
    """AutoAttack's FAB restart: x + (eps / 2) t / max|t| per example, t uniform in [-1, 1], clipped."""
    t = per_example_uniform(seed, stream, ids, tf.shape(x)[1:], -1.0, 1.0)
    scale = tf.reduce_max(tf.abs(tf.reshape(t, [tf.shape(t)[0], -1])), axis=1)
    return tf.clip_by_value(x + 0.5 * eps * t / (rows(scale, x) + 1e-12), clip_min, clip_max)


def fab(model_fn, x, eps, nb_iter=100, y=None, restarts=1, nb_targets=9, alpha_max=ALPHA_MAX, eta=ETA,
        beta=BETA, clip_min=0.0, clip_max=1.0, seed=0, example_ids=None):
    """FAB-T, L-inf: per target (the 2nd .. (nb_targets + 1)-th most likely class of the clean
    input) and restart, `nb_iter` iterations towards the closest point of the target's side of
    the boundary. `y` is the TRUE class (or the prediction when None); success is "not y".

    Returns per example the closest misclassified point found if it lies within `eps` of x, else
    x itself (AutoAttack's convention; clean misclassified examples stay as they are). With a
    large eps the result is FAB's minimal adversarial point. The first restart is deterministic;
    example k's start in a later restart r of target j is drawn from (seed, j * restarts + r,
    example_ids[k]), so the result does not depend on the batch.
    """
    check_eps(eps, clip_min, clip_max)
    nb_iter = check_count("nb_iter", nb_iter)
    restarts = check_count("restarts", restarts)
    nb_targets = check_count("nb_targets", nb_targets)
    alpha_max = check_positive("alpha_max", alpha_max)
    eta, beta = check_positive("eta", eta), check_positive("beta", beta)
    if not beta < 1.0:
        raise GreatError(f"beta must be below 1 (the step back towards x after a success), got {beta}")
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted=False)
    ids = resolve_ids(example_ids, x.shape[0])
    clean_logits = model_fn(x)
    num_classes = int(clean_logits.shape[-1])
    if nb_targets > num_classes - 1:
        raise GreatError(f"nb_targets {nb_targets} is more than the {num_classes - 1} other classes")
    # Positions in the clean logits' descending order: 0 is the top class (y, if correct).
    order = tf.argsort(clean_logits, axis=-1, direction="DESCENDING", stable=True).numpy()
    constants = [tf.constant(v, tf.float32) for v in (clip_min, clip_max)]
    steps = [tf.constant(nb_iter)] + [tf.constant(v, tf.float32) for v in (alpha_max, eta, beta)]

    x_np, labels_np = x.numpy(), labels.numpy()
    fooled = np.argmax(clean_logits.numpy(), axis=-1) != labels_np
    result = x_np.copy()
    for position in range(1, nb_targets + 1):
        for r in range(restarts):
            todo = np.flatnonzero(~fooled)
            if todo.size == 0:
                break
            xs = tf.constant(x_np[todo])
            start = xs if r == 0 else fab_start(xs, eps, seed, (position - 1) * restarts + r,
                                                tf.gather(ids, todo), clip_min, clip_max)
            closest, distance = _fab_run(model_fn, xs, tf.constant(labels_np[todo]),
                                         tf.constant(order[todo, position]), start, *constants, *steps)
            found = distance.numpy() <= eps
            result[todo[found]] = closest.numpy()[found]
            fooled[todo[found]] = True
    return tf.constant(result)
