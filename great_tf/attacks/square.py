"""The Square attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020), L-inf, margin loss
(docs/design.md#attacks).

A random search that needs only the model's outputs, so masked or obfuscated gradients cannot
fool it:

- Start: x + eps * a random sign per image column and channel (vertical stripes), clipped.
- Each iteration proposes, per example, a square window of side s at a uniformly random position
  whose pixels move to x +- eps (one random sign per channel), and keeps the proposal if the
  margin z_y - max_{j != y} z_j goes down. An example stops once misclassified (margin <= 0).
- s = round(sqrt(p * h * w)), with p = p_init = 0.8 halved at iterations 10, 50, 200, 500, 1000,
  2000, 4000, 6000, 8000 (`p_schedule`); with `rescale_schedule` those iterations are scaled to
  the budget as if it were 10,000 queries (the authors' stand-alone code does this; AutoAttack,
  with 5,000 queries, does not, and neither do we by default).

Positions are drawn from all h - s + 1 offsets, as in the paper's Algorithm 2.
Each iteration is one forward pass per still-correct example; examples already misclassified are
dropped from the batch between chunks of iterations.
"""

import math

import numpy as np
import tensorflow as tf

from great_tf.attacks.utils import (as_input, attack_labels, check_count, check_eps,
                                    compiled_per_model, margin_loss, per_example_uniform, project,
                                    resolve_ids, rows)
from great_tf.errors import GreatError

P_INIT = 0.8
# (last iteration of the stage, divisor of p_init): the schedule of the authors' code.
_STAGES = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
           (8000, 256))
CHUNK = 100  # iterations per compiled call; finished examples are dropped in between


def p_schedule(iteration, nb_queries, p_init=P_INIT, rescale_schedule=False):
    """The fraction p of the image a square covers at `iteration` (counted from 0)."""
    if rescale_schedule:
        iteration = int(iteration / nb_queries * 10000)
    for last, divisor in _STAGES:
        if iteration <= last:
            return p_init / divisor
    return p_init / 512


def square_sizes(nb_queries, height, width, p_init=P_INIT, rescale_schedule=False):
    """The side of the square at every iteration: max(round(sqrt(p * h * w)), 1), at most min(h, w)."""
    p = [p_schedule(i, nb_queries, p_init, rescale_schedule) for i in range(nb_queries)]
    sides = [max(int(round(math.sqrt(fraction * height * width))), 1) for fraction in p]
    return np.minimum(np.asarray(sides, np.int32), min(height, width))


def _margin(model_fn, x, labels):
    """z_y - max_{j != y} z_j: positive while the example is classified as y."""
    return -margin_loss(labels, model_fn(x))


@compiled_per_model
def _search(model_fn, x, labels, x_best, margin, randoms, sides, eps, clip_min, clip_max):
    """`len(sides)` iterations of the random search on one chunk; `randoms` is [B, len(sides), 2 + C]."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    row_index, col_index = tf.range(height)[None], tf.range(width)[None]
    for t in tf.range(tf.size(sides)):
        if not tf.reduce_any(margin > 0.0):
            break
        side, u = sides[t], randoms[:, t]
        top = tf.cast(tf.floor(u[:, 0] * tf.cast(height - side + 1, tf.float32)), tf.int32)[:, None]
        left = tf.cast(tf.floor(u[:, 1] * tf.cast(width - side + 1, tf.float32)), tf.int32)[:, None]
        in_rows = (row_index >= top) & (row_index < top + side)  # [B, H]
        in_cols = (col_index >= left) & (col_index < left + side)  # [B, W]
        window = tf.cast(in_rows[:, :, None, None] & in_cols[:, None, :, None], x.dtype)
        signs = tf.where(u[:, None, None, 2:] < 0.5, -1.0, 1.0)  # [B, 1, 1, C]
        # The window's pixels land on x +- eps once projected: x_best is within eps of x.
        proposal = project(x_best + window * 2.0 * eps * signs, x, eps, clip_min, clip_max)
        new_margin = _margin(model_fn, proposal, labels)
        accept = (margin > 0.0) & (new_margin < margin)
        x_best = tf.where(rows(accept, x), proposal, x_best)
        margin = tf.where(accept, new_margin, margin)
    return x_best, margin


def square(model_fn, x, eps, nb_queries=5000, y=None, clip_min=0.0, clip_max=1.0, seed=0,
           p_init=P_INIT, rescale_schedule=False, example_ids=None):
    """Square attack on images [B, H, W, C]: up to `nb_queries` iterations of random search on the
    margin loss (plus one query for the start), per example until it is misclassified.

    Example k's random numbers come from (seed, example_ids[k]): the result does not depend on
    the batch. Returns the best point per example (misclassified if the search succeeded).
    """
    check_eps(eps, clip_min, clip_max)
    nb_queries = check_count("nb_queries", nb_queries, minimum=0)
    if not 0.0 < p_init <= 1.0:
        raise GreatError(f"p_init must be in (0, 1], got {p_init}")
    x = as_input(x, clip_min, clip_max)
    if x.shape.rank != 4:
        raise GreatError(f"square needs images [batch, height, width, channels], got shape {x.shape}")
    labels = attack_labels(model_fn, x, y, targeted=False)
    ids = resolve_ids(example_ids, x.shape[0])
    _, height, width, channels = x.shape
    constants = [tf.constant(v, tf.float32) for v in (eps, clip_min, clip_max)]

    stripes = per_example_uniform(seed, 0, ids, [1, width, channels])
    x_best = project(x + eps * tf.where(stripes < 0.5, -1.0, 1.0), x, *constants)
    margin = _margin(model_fn, x_best, labels).numpy()
    randoms = per_example_uniform(seed, 1, ids, [nb_queries, 2 + channels]).numpy() if nb_queries else None
    sides = square_sizes(nb_queries, height, width, p_init, rescale_schedule)
    x_np, labels_np, best = x.numpy(), labels.numpy(), x_best.numpy()
    for start in range(0, nb_queries, CHUNK):
        todo = np.flatnonzero(margin > 0.0)
        if todo.size == 0:
            break
        stop = min(start + CHUNK, nb_queries)
        found, found_margin = _search(
            model_fn, tf.constant(x_np[todo]), tf.constant(labels_np[todo]), tf.constant(best[todo]),
            tf.constant(margin[todo]), tf.constant(randoms[todo, start:stop]),
            tf.constant(sides[start:stop]), *constants)
        best[todo], margin[todo] = found.numpy(), found_margin.numpy()
    return tf.constant(best)
