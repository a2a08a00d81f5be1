"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022;
docs/design.md#mtl-methods)."""

import keras
import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel, TaskWeights

NEWTON_STEPS = 100     # at most; 5 to 10 from a cold start on the Gram matrices we measured
SOLVED = 1e-12         # stop when max_i |u_i (C u)_i - 1| is below this
ACCEPTED = 1e-6        # a solution must satisfy the condition to this accuracy


def _potential(corr, u):
    """f(u) = u^T C u / 2 - sum_i log u_i: strictly convex on u > 0, its stationary point is
    the bargaining condition C u = 1/u."""
    return 0.5 * u @ corr @ u - np.sum(np.log(u))


def _residual(corr, u):
    return np.max(np.abs(u * (corr @ u) - 1.0))


def _newton_step(corr, u):
    """u after one damped Newton step on f (backtracking until f decreases enough, iterates
    kept positive), or None when no step decreases f (u diverging: no solution)."""
    gradient = corr @ u - 1.0 / u
    try:
        direction = -np.linalg.solve(corr + np.diag(1.0 / u**2), gradient)
    except np.linalg.LinAlgError:
        return None
    decrement = -gradient @ direction
    if not np.isfinite(decrement) or decrement <= 0:
        return None
    step, value = 1.0, _potential(corr, u)
    while step > 1e-12:
        moved = u + step * direction
        if np.all(moved > 0) and _potential(corr, moved) <= value - 0.25 * step * decrement:
            return moved
        step *= 0.5
    return None


def bargaining_weights(gram, start=None):
    """The Nash bargaining weights for the Gram matrix K = G G^T of the task gradients: the
    alpha > 0 with K alpha = 1/alpha elementwise (Navon et al. 2022, Sec. 3).

    Solved exactly: in u_i = alpha_i |g_i| the condition reads C u = 1/u with C the cosine
    matrix of the gradients, the stationary point of the strictly convex f(u) = u^T C u / 2 -
    sum log u_i, found by damped Newton from `start` (the previous weights) or from u = 1. The
    solution is scale-free (u is unchanged when a gradient is scaled) and exists exactly when
    no convex combination of the gradients vanishes (along such a combination v, C v = 0 and f
    decreases without bound): then Newton's iterates diverge and the answer is rejected.
    NumPy, float64.

    Returns (alpha, ok): ok is False for a matrix that is not finite, a zero gradient (no
    solution) or when the condition is not met to ACCEPTED after NEWTON_STEPS.
    """
    gram = np.asarray(gram, np.float64)
    norms = np.sqrt(np.diag(gram)) if np.all(np.isfinite(gram)) else np.zeros(len(gram))
    if not np.all(norms > 0):
        return np.ones(len(gram)), False
    corr = gram / np.outer(norms, norms)
    u = np.ones(len(gram)) if start is None else np.asarray(start, np.float64) * norms
    if not np.all(np.isfinite(u) & (u > 0)):
        u = np.ones(len(gram))
    with np.errstate(all="ignore"):
        for _ in range(NEWTON_STEPS):
            if _residual(corr, u) < SOLVED:
                break
            u = _newton_step(corr, u)
            if u is None:
                return np.ones(len(gram)), False
        ok = bool(np.all(np.isfinite(u)) and np.all(u > 0) and _residual(corr, u) < ACCEPTED)
    return u / norms, ok


def solve_weights(gram, start):
    """`bargaining_weights` as a TF op on a global Gram matrix (every replica gets the same
    answer from the same input): ([T] weights in the Gram matrix's dtype, ok)."""
    def solve(gram, start):
        alpha, ok = bargaining_weights(gram, start)
        return alpha.astype(np.float64), np.bool_(ok)

    alpha, ok = tf.numpy_function(solve, [tf.cast(gram, tf.float64), tf.cast(start, tf.float64)],
                                  [tf.float64, tf.bool], name="nash_bargaining")
    alpha.set_shape(start.shape)
    ok.set_shape([])
    return tf.cast(alpha, gram.dtype), ok


class NashMTL(MultiTaskModel):
    """The shared parameters descend sum_i alpha_i g_i with the Nash bargaining solution
    G G^T alpha = 1/alpha (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game",
    Sec. 3: d = sum_i alpha_i g_i maximises sum_i log(d . g_i) in a ball), re-solved every
    `update_weights_every`=1 steps and reused in between (the reference code's default and
    option). As in the reference code, the loss is
    sum_i alpha_i L_i for the decoders too (their gradients are alpha_i-weighted) and the
    shared gradient's norm is clipped to `max_norm`=1.0 (0: off); its global norm
    sqrt(alpha^T K alpha) comes from the Gram matrix K = G G^T, for free. Raw task losses;
    gradients w.r.t. the shared parameters (the paper's; LibMTL refuses rep_grad here too).

    Solver (a deviation): the paper reaches the solution by a sequence of convex problems
    (concave part linearised; `optim_niter`=20 of them, cvxpy/ECOS), whose fixed point is the
    same condition. Here it is solved exactly (`bargaining_weights`: damped Newton on a strictly
    convex potential, residual < 1e-12, typically in 5 to 10 steps), because the sequence
    solved with SciPy (SLSQP; cvxpy would be a new dependency) failed on 36 % (correlated
    gradients) to 59 % (random ones) of Gram matrices whose solution exists, where Newton
    solved all of them and rejected exactly those with no solution (measured on 200 matrices
    of each kind, T = 2 to 5).

    Weight collapse (nash-mtl issue 13, LibMTL issue 39): alpha_i scales as 1/|g_i|, so large
    gradients give weights of 1e-4 that stall the decoders, and the solver can fail (no
    solution exists when a convex combination of the gradients vanishes: a Pareto-stationary
    point, e.g. two opposed gradients). Guard: a rejected solution keeps the previous alpha
    (equal weights, 1, before the first, as the reference code starts), then every weight is
    floored at `min_weight`=1e-3 (ours, not the paper's; 0 turns it off). (The exact solution
    itself cannot collapse relative to the gradients: alpha_i |g_i| >= 1/sqrt(T).) Rejections
    are logged as `train_nash_fallback` (fraction of steps), the weights as
    `train_weight_<task>`.

    State: the current alpha, a non-trainable weight (checkpointed: a resumed run reuses it
    and warm-starts from it). Cost per step: T backward passes from the feature to the encoder
    (also on steps that reuse alpha: TensorFlow cannot take a tape's gradients inside a
    conditional, so update_weights_every > 1 saves only the solve), one backward pass through
    the decoders for their alpha-weighted gradients, one all-reduce of T x P floats (P the
    encoder's parameters) besides the optimizer's own, and a NumPy solve on the T x T Gram
    matrix through `tf.numpy_function` (identical on every replica: same global input; not
    XLA-compilable, so `compile` defaults to `jit_compile=False`).
    """

    method = "nashmtl"
    hyperparameters = {"update_weights_every": 1, "max_norm": 1.0, "min_weight": 1e-3}

    def __init__(self, encoder, decoders, tasks, update_weights_every=1, max_norm=1.0,
                 min_weight=1e-3, **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if int(update_weights_every) < 1 or float(max_norm) < 0 or float(min_weight) < 0:
            raise GreatError(f"nashmtl needs update_weights_every >= 1, max_norm >= 0 and "
                             f"min_weight >= 0, got {update_weights_every}, {max_norm} and "
                             f"{min_weight}")
        self.update_weights_every = int(update_weights_every)
        self.max_norm = float(max_norm)
        self.min_weight = float(min_weight)
        self.alpha = TaskWeights(len(self.tasks), 1.0, trainable=False, name="nash_alpha")
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]
        self.fallback_tracker = self.track(keras.metrics.Mean(name="train_nash_fallback"))

    def compile(self, optimizer="adam", **kwargs):
        kwargs.setdefault("jit_compile", False)  # the NumPy solve cannot be XLA-compiled
        super().compile(optimizer, **kwargs)

    @property
    def jit_compile(self):
        return keras.Model.jit_compile.fget(self)

    @jit_compile.setter
    def jit_compile(self, value):
        if value is True:
            raise GreatError("nashmtl solves its weights in NumPy (tf.numpy_function), which XLA "
                             "cannot compile: drop --jit")
        keras.Model.jit_compile.fset(self, value)

    def current_alpha(self, gram):
        """This step's weights: solved on update steps (with the guard), else the stored ones."""
        previous = tf.cast(self.alpha.values, gram.dtype)
        update = tf.equal(self.optimizer.iterations % self.update_weights_every, 0)

        def solved():
            alpha, ok = solve_weights(gram, previous)
            return tf.where(ok, alpha, previous), tf.cast(tf.logical_not(ok), gram.dtype)

        alpha, fallback = tf.cond(update, solved, lambda: (previous, tf.zeros([], gram.dtype)))
        alpha = tf.maximum(alpha, tf.cast(self.min_weight, gram.dtype))
        self.alpha.values.assign(tf.cast(alpha, self.alpha.values.dtype))
        self.fallback_tracker.update_state(fallback)
        return alpha

    def network_gradients(self, step):
        grads = self.gradients_by_task(step, "shared")
        gram = grads.gram()
        alpha = self.current_alpha(gram)
        update = tf.linalg.matvec(grads.matrix, alpha, transpose_a=True)
        if self.max_norm > 0:
            norm = tf.sqrt(tf.maximum(tf.tensordot(alpha, tf.linalg.matvec(gram, alpha), 1), 0.0))
            update *= tf.minimum(tf.ones_like(norm), self.max_norm / tf.maximum(norm, 1e-12))
        for tracker, w in zip(self.weight_trackers, tf.unstack(alpha)):
            tracker.update_state(w)
        return self.combined_gradients(step, grads, grads.apply_vector(update), task_weights=alpha)
