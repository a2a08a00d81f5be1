"""Random loss weighting (Lin et al., TMLR 2022; docs/design.md#mtl-methods)."""

import keras
import tensorflow as tf

from great_tf.errors import GreatError
from great_tf.mtl.base import MultiTaskModel

DISTRIBUTIONS = ("normal", "dirichlet")


def random_loss_weights(num_tasks, seed, distribution="normal", concentration=1.0, dtype=tf.float32):
    """This step's loss weights from the stateless draw `seed` ([2] int64): softmax of T
    standard normal draws ("normal"), or one Dirichlet(concentration) draw ("dirichlet"),
    already on the simplex (normalised gammas). Either way they sum to 1."""
    if distribution == "normal":
        return tf.nn.softmax(tf.random.stateless_normal([num_tasks], seed, dtype=dtype))
    gammas = tf.random.stateless_gamma([num_tasks], seed, alpha=tf.cast(concentration, dtype), dtype=dtype)
    return gammas / tf.reduce_sum(gammas)


class RandomLossWeightingMTL(MultiTaskModel):
    """sum_i lambda_i L_i with new random weights every step (Lin et al. 2022, "Reasonable
    Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning", arXiv:2111.10603:
    lambda = f(lambda~), lambda~ drawn from p). Default, as LibMTL (by the paper's first author):
    lambda = softmax(lambda~), lambda~ ~ N(0, I). Option `distribution="dirichlet"`: lambda
    drawn from Dirichlet(`concentration`=1) and used as drawn (it is already on the simplex;
    the 2022 LibMTL code applied a softmax to it as well, which pulls it towards equal weights).
    The weights sum to 1 (equal weights use 1 each): for all parameters, decoders included.

    Randomness: a stateless draw seeded by (`seed`, the optimizer's step), identical on every
    replica and reproduced by a resumed run (no state to checkpoint). Cost per step: equal
    weights' (one backward pass, no extra all-reduce). Weights logged as `train_weight_<task>`.
    """

    method = "rlw"
    hyperparameters = {"distribution": "normal", "concentration": 1.0, "seed": 0}

    def __init__(self, encoder, decoders, tasks, distribution="normal", concentration=1.0, seed=0,
                 **kwargs):
        super().__init__(encoder, decoders, tasks, **kwargs)
        if distribution not in DISTRIBUTIONS:
            raise GreatError(f"unknown rlw distribution {distribution!r}: use "
                             f"{' or '.join(DISTRIBUTIONS)}")
        if float(concentration) <= 0:
            raise GreatError(f"rlw needs a positive Dirichlet concentration, got {concentration}")
        self.distribution, self.concentration, self.seed = distribution, float(concentration), int(seed)
        self.weight_trackers = [self.track(keras.metrics.Mean(name=f"train_weight_{t.name}"))
                                for t in self.tasks]

    def current_weights(self, dtype=tf.float32):
        """This step's weights, the same on every replica."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        return random_loss_weights(len(self.tasks), seed, self.distribution, self.concentration, dtype)

    def network_gradients(self, step):
        weights = self.current_weights(step.losses.dtype)
        for tracker, w in zip(self.weight_trackers, tf.unstack(weights)):
            tracker.update_state(w)
        return self.weighted_gradients(step, weights)
