"""IMTL, impartial multi-task learning (Liu et al., ICLR 2021; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.distribute import num_replicas
from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel, TaskWeights
from great_tf.mtl.gradients import check_space
from great_tf.precision import loss_scale, scale

VARIANTS = ("g", "l", "hybrid")


def imtl_g_weights(gram):
    """IMTL-G's closed form (Section 3.2) from the Gram matrix: alpha with sum 1 such that
    g = sum_t alpha_t g_t has equal projections g . u_t on the unit gradients u_t = g_t/|g_t|.

    With D the rows g_1 - g_t and U the rows u_1 - u_t (t = 2..T), alpha_{2:T} = g_1 U^T (D U^T)^-1
    and alpha_1 = 1 - sum alpha_{2:T}. Every product is an inner product g_i . u_k = G_ik / |g_k|.
    A zero gradient (no unit vector) falls back to 1/T each.
    """
    num_tasks = gram.shape[0]
    if num_tasks == 1:
        return tf.ones([1], gram.dtype)
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
    on_units = tf.math.divide_no_nan(gram, norms[None, :])           # [i, k] = g_i . u_k
    first_on_u = on_units[0, 0] - on_units[0, 1:]                    # g_1 . (u_1 - u_k)
    d_u = first_on_u[None, :] - (on_units[1:, 0:1] - on_units[1:, 1:])  # (g_1 - g_j) . (u_1 - u_k)
    # alpha D U^T = g_1 U^T; the pseudo-inverse also takes a singular system (parallel gradients).
    rest = tf.linalg.matvec(tf.linalg.pinv(tf.transpose(d_u)), first_on_u)
    alpha = tf.concat([tf.reshape(1.0 - tf.reduce_sum(rest), [1]), rest], 0)
    usable = tf.logical_and(tf.reduce_all(norms > 0), tf.reduce_all(tf.math.is_finite(alpha)))
    return tf.where(usable, alpha, tf.fill([num_tasks], tf.constant(1.0 / num_tasks, gram.dtype)))


class IMTLMTL(MultiTaskModel):
    """Impartial multi-task learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang 2021).

    - `variant="g"`, IMTL-G (gradient balance, Section 3.2): the shared part descends
      sum_t alpha_t g_t with the closed-form alpha (sum 1) that gives it equal projections onto
      every task's unit gradient; decoders descend their raw losses.
    - `variant="l"`, IMTL-L (loss balance, Section 3.1): every parameter descends
      sum_t e^{s_t} L_t and the learned scales s_t descend e^{s_t} L_t - s_t (their gradient
      e^{s_t} L_t - 1 drives every scaled loss towards 1).
    - `variant="hybrid"` (default), the paper's IMTL (Algorithm 1) and LibMTL's: IMTL-G on the
      gradients of the scaled losses e^{s_t} L_t for the shared part, the scaled losses for the
      decoders, and s_t learned as in IMTL-L.

    s starts at 0 and is trained by `compile(weight_optimizer=...)` (Adam by default) with the
    scales of this step held constant in the network's update, as one backward pass of the
    paper does. `space="shared"` (default) balances the gradients of the shared parameters;
    `space="feature"` those of the shared feature z, as the paper's Algorithm 1 does to save
    backward passes.

    Cost per step, shared: T backward passes from the feature to the encoder and one T x P
    all-reduce (P the encoder's parameters); feature: one encoder backward pass and a T x T
    all-reduce; "l" is a loss weighting (one backward pass, no extra all-reduce). The scales add
    the weight optimizer's T-float update. Weights logged as `train_weight_<task>` (on the raw
    gradients: alpha_t e^{s_t} for the hybrid), scales as `train_scale_<task>` (e^{s_t}).
    """

    method = "imtl"
    hyperparameters = {"variant": "hybrid", "space": "shared"}

    def __init__(self, encoder, decoders, tasks, variant="hybrid", space="shared", **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if variant not in VARIANTS:
            raise GreatError(f"unknown IMTL variant {variant!r}: choose g (IMTL-G), l (IMTL-L) or "
                             f"hybrid (both, the paper's IMTL)")
        self.variant = variant
        self.space = check_space(space)
        self.log_scales = TaskWeights(len(self.tasks), 0.0, trainable=self.learns_scales,
                                      name="loss_scales")
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]
        self.scale_trackers = [self.track(keras.metrics.Mean(name=f"train_scale_{t.name}"))
                               for t in self.tasks] if self.learns_scales else []

    @property
    def learns_scales(self):
        return self.variant in ("l", "hybrid")

    def optimizer_variables(self):
        return {"weight_optimizer": [self.log_scales.values]} if self.learns_scales else {}

    def network_gradients(self, step):
        if not self.learns_scales:
            grads = self.gradients_by_task(step, self.space)
            weights = imtl_g_weights(grads.gram())
            self.record(self.weight_trackers, weights)
            return self.combined_gradients(step, grads, grads.apply_weights(weights))

        scales = tf.exp(tf.cast(self.log_scales.values, step.losses.dtype))
        self.update_scales(step)
        self.record(self.scale_trackers, scales)
        if self.variant == "l":
            self.record(self.weight_trackers, scales)
            return self.weighted_gradients(step, scales)
        grads = self.gradients_by_task(step, self.space)
        # The scaled losses' gradients are e^{s_t} g_t: their Gram is diag(e^s) G diag(e^s).
        weights = imtl_g_weights(scales[:, None] * grads.gram() * scales[None, :]) * scales
        self.record(self.weight_trackers, weights)
        return self.combined_gradients(step, grads, grads.apply_weights(weights), task_weights=scales)

    def update_scales(self, step):
        """One weight-optimizer step on s for sum_t e^{s_t} L_t - s_t, the losses held constant."""
        log_scales = self.log_scales.values
        losses = tf.cast(tf.stop_gradient(step.losses), log_scales.dtype)
        with tf.GradientTape() as tape:
            # The replicas' loss shares and 1/R of the -s_t term sum to the global objective.
            objective = tf.reduce_sum(tf.exp(log_scales) * losses - log_scales / num_replicas())
            objective = scale(objective, loss_scale(self.weight_optimizer))
        self.weight_optimizer.apply(tape.gradient(objective, [log_scales]), [log_scales])

    @staticmethod
    def record(trackers, values):
        for tracker, value in zip(trackers, tf.unstack(values)):
            tracker.update_state(value)
