"""Auto-PGD (APGD; Croce & Hein, ICML 2020, Algorithm 1), L-inf, and its targeted form APGD-T
(docs/design.md#attacks).

APGD is PGD without a step size to tune:

- The step size starts at 2 * eps and is halved at checkpoints w_0 = 0, w_1 = 0.22 N,
  w_{j+1} = w_j + max(w_j - w_{j-1} - 0.03 N, 0.06 N) (N iterations; 22, 41, 57, 70, 80, 87, 93,
  99 for N = 100), for each example where (1) the loss rose in at most rho = 0.75 of the steps
  since the previous checkpoint, or (2) the step size was not halved at the previous checkpoint
  and the best loss has not improved since. An example whose step is halved restarts from its
  best point so far (highest loss).
- Every step has momentum 0.75: z = P(x_k + eta * sign(grad)),
  x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1})) (the first step is a plain one), with
  P the projection onto the eps-ball and the pixel range.
- The start is x plus eps times uniform noise scaled so its largest coordinate is eps.

Where the paper and the authors' reference code (AutoAttack, autopgd_base.py) differ, this
follows the code, whose settings produced the published numbers: condition (1) uses "at most",
and the momentum term after a restart from the best point uses the point before the step. The
first window compares the first step's loss with the loss at the start (the reference code reads
an unset value there).

Restarts and targets (APGD-T) run only on the examples not yet misclassified, as in AutoAttack.
"""

import numpy as np
import tensorflow as tf

from great_tf.attacks.utils import (as_input, attack_labels, check_classes, check_count, check_eps,
                                    compiled_per_model, loss_gradient, per_example_uniform, project,
                                    resolve_ids, resolve_loss, rows, targeted_dlr_loss)
from great_tf.errors import GreatError

RHO = 0.75  # condition (1): halve the step if the loss rose in at most this share of the steps
MOMENTUM = 0.75


def checkpoint_schedule(nb_iter):
    """(is_checkpoint[i], window[i]) for iterations i = 0 .. nb_iter - 1: whether the step size is
    checked after iteration i, and how many steps since the previous check (Algorithm 1's w_j)."""
    first = max(int(0.22 * nb_iter), 1)
    decrease, minimum = max(int(0.03 * nb_iter), 1), max(int(0.06 * nb_iter), 1)
    is_check, window = np.zeros(nb_iter, bool), np.zeros(nb_iter, np.float32)
    done, length = 0, first
    while done + length <= nb_iter:
        done += length
        is_check[done - 1], window[done - 1] = True, length
        length = max(length - decrease, minimum)
    return is_check, window


def _objective(loss_fn, mode, labels, targets, logits):
    """What APGD maximises: the loss of y ("untargeted"), the targeted DLR ("targeted dlr"), or
    the target's negated loss for any other loss ("targeted")."""
    if mode == "untargeted":
        return loss_fn(labels, logits)
    if mode == "targeted dlr":
        return targeted_dlr_loss(labels, targets, logits)
    return -loss_fn(targets, logits)


def should_halve(rises, window, halved_before, best_before, best):
    """Algorithm 1's checkpoint test, per example: (1) the loss rose in at most RHO of the
    `window` steps since the previous checkpoint, or (2) the step was not halved there and the
    best loss has not improved since (`best_before` is the best loss at that checkpoint)."""
    return (rises <= RHO * window) | (~halved_before & (best_before >= best))


@compiled_per_model
def _apgd_run(model_fn, x, labels, targets, start, eps, clip_min, clip_max, is_check, window,
              loss_fn, mode):
    """One APGD run from `start`: (last misclassified point, misclassified?, best point, best loss)."""

    def evaluate(x_adv):
        grad, logits, values = loss_gradient(
            model_fn, x_adv, lambda z: _objective(loss_fn, mode, labels, targets, z))
        wrong = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
        return grad, tf.cast(values, tf.float32), wrong

    x_adv = project(start, x, eps, clip_min, clip_max)
    grad, loss, fooled = evaluate(x_adv)
    x_fooled, x_best, grad_best, loss_best = x_adv, x_adv, grad, loss
    x_prev = x_adv
    step = tf.fill(tf.shape(loss), 2.0 * eps)
    rises = tf.zeros_like(loss)
    loss_at_check, reduced_at_check = loss_best, tf.ones_like(fooled)
    for i in tf.range(tf.size(is_check)):
        momentum = tf.where(i == 0, 1.0, MOMENTUM)
        z = project(x_adv + rows(step, x) * tf.sign(grad), x, eps, clip_min, clip_max)
        x_next = project(x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev),
                         x, eps, clip_min, clip_max)
        x_prev, x_adv = x_adv, x_next
        grad, value, wrong = evaluate(x_adv)
        x_fooled = tf.where(rows(wrong, x), x_adv, x_fooled)
        fooled = fooled | wrong
        rises += tf.cast(value > loss, tf.float32)
        loss = value
        better = value > loss_best
        x_best = tf.where(rows(better, x), x_adv, x_best)
        grad_best = tf.where(rows(better, x), grad, grad_best)
        loss_best = tf.where(better, value, loss_best)
        if is_check[i]:
            halve = should_halve(rises, window[i], reduced_at_check, loss_at_check, loss_best)
            step = tf.where(halve, step / 2.0, step)
            x_adv = tf.where(rows(halve, x), x_best, x_adv)
            grad = tf.where(rows(halve, x), grad_best, grad)
            reduced_at_check, loss_at_check = halve, loss_best
            rises = tf.zeros_like(rises)
    return x_fooled, fooled, x_best, loss_best


def apgd_start(x, eps, seed, stream, ids):
    """AutoAttack's L-inf start: x + eps * t / max|t| per example, t uniform in [-1, 1]."""
    t = per_example_uniform(seed, stream, ids, tf.shape(x)[1:], -1.0, 1.0)
    scale = tf.reduce_max(tf.abs(tf.reshape(t, [tf.shape(t)[0], -1])), axis=1)
    return x + eps * t / (rows(scale, x) + 1e-12)


def apgd(model_fn, x, eps, nb_iter=100, y=None, loss="ce", targeted=False, restarts=1,
         clip_min=0.0, clip_max=1.0, seed=0, nb_targets=9, loss_fn=None, example_ids=None):
    """Auto-PGD, L-inf: `nb_iter` iterations from `restarts` random starts.

    `loss`: "ce", "margin" or "dlr" (or `loss_fn(labels, logits)`), maximised for y.
    `targeted=True` is APGD-T: y stays the TRUE class (or the prediction when None) and the attack
    runs once per target, the 2nd, 3rd, ... up to the (nb_targets + 1)-th most probable class of
    the clean input (9 targets on 10 classes, as in AutoAttack); with loss="dlr" it maximises the
    targeted DLR loss, with another loss the target's negated loss. Success is always "not y".

    Returns per example a misclassified point if one was found, else the point of highest loss.
    Example k's start in run r is drawn from (seed, r, example_ids[k]), so it does not depend on
    the batch.
    """
    check_eps(eps, clip_min, clip_max)
    nb_iter = check_count("nb_iter", nb_iter)
    restarts = check_count("restarts", restarts)
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted=False)
    ids = resolve_ids(example_ids, x.shape[0])
    clean_logits = model_fn(x)
    num_classes = int(clean_logits.shape[-1])
    if targeted:
        nb_targets = check_count("nb_targets", nb_targets)
        if nb_targets > num_classes - 1:
            raise GreatError(f"nb_targets {nb_targets} is more than the {num_classes - 1} other classes")
        mode = "targeted dlr" if loss == "dlr" and loss_fn is None else "targeted"
        check_classes(mode if mode == "targeted dlr" else loss, num_classes)
        # Positions in the clean logits' descending order: 0 is the top class (y, if correct).
        order = tf.argsort(clean_logits, axis=-1, direction="DESCENDING", stable=True)
        target_positions = range(1, nb_targets + 1)
    else:
        mode, order, target_positions = "untargeted", None, [None]
        check_classes(loss, num_classes)
    loss_fn = resolve_loss(loss, loss_fn)

    schedule = [tf.constant(a) for a in checkpoint_schedule(nb_iter)]
    constants = [tf.constant(v, tf.float32) for v in (eps, clip_min, clip_max)]
    x_np, labels_np = x.numpy(), labels.numpy()
    fooled = tf.argmax(clean_logits, axis=-1, output_type=tf.int32).numpy() != labels_np
    result = x_np.copy()  # misclassified clean examples stay as they are
    best_x, best_loss = x_np.copy(), np.full(len(x_np), -np.inf, np.float32)
    for t, position in enumerate(target_positions):
        for r in range(restarts):
            todo = np.flatnonzero(~fooled)
            if todo.size == 0:
                break
            xs, ys = tf.constant(x_np[todo]), tf.constant(labels_np[todo])
            targets = ys if position is None else tf.gather(tf.gather(order, todo), position, axis=1)
            start = apgd_start(xs, constants[0], seed, t * restarts + r, tf.gather(ids, todo))
            x_fooled, now, x_best, loss_best = (
                v.numpy() for v in _apgd_run(model_fn, xs, ys, targets, start, *constants, *schedule,
                                             loss_fn, mode))
            result[todo[now]] = x_fooled[now]
            fooled[todo[now]] = True
            higher = loss_best > best_loss[todo]
            best_x[todo[higher]], best_loss[todo[higher]] = x_best[higher], loss_best[higher]
    per_example = fooled.reshape((-1,) + (1,) * (x_np.ndim - 1))
    return tf.constant(np.where(per_example, result, best_x))
