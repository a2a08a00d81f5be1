"""An AutoAttack-style ensemble (Croce & Hein 2020): APGD-CE, then APGD-T, then Square, each on
the examples still correctly classified (docs/design.md#attacks).

Standard AutoAttack also runs FAB-T (a minimum-norm attack) between APGD-T and Square; we leave it
out. In Croce & Hein's own evaluations FAB-T rarely changes the robust accuracy once APGD-T has
run, but this ensemble is not "AutoAttack" and its numbers should be named "AA (APGD-CE, APGD-T,
Square)".
"""

import numpy as np
import tensorflow as tf

from great_tf.attacks.apgd import apgd
from great_tf.attacks.square import square
from great_tf.attacks.utils import as_input, attack_labels, correct, resolve_ids


def components(nb_iter=100, restarts=1, nb_targets=9, nb_queries=5000, seed=0):
    """The ensemble in its order: (name, attack, keyword arguments), with AutoAttack's standard
    budgets by default (100 iterations, 1 restart, 9 targets, 5,000 queries)."""
    return (("APGD-CE", apgd, {"nb_iter": nb_iter, "restarts": restarts, "loss": "ce", "seed": seed}),
            ("APGD-T", apgd, {"nb_iter": nb_iter, "restarts": restarts, "loss": "dlr", "targeted": True,
                              "nb_targets": nb_targets, "seed": seed}),
            ("Square", square, {"nb_queries": nb_queries, "seed": seed}))


def autoattack(model_fn, x, eps, y=None, nb_iter=100, restarts=1, nb_targets=9, nb_queries=5000,
               clip_min=0.0, clip_max=1.0, seed=0, batch_size=256, example_ids=None):
    """Per example the worst case over APGD-CE, APGD-T and Square: each attack runs, in that
    order, on the examples it has not yet misclassified; an example's result is the first
    adversarial point found (or Square's best point if none was). `nb_targets` is capped at the
    number of other classes. Every attack draws example k's noise from (seed, example_ids[k]),
    so running them one by one on every example gives the same per-example outcome.
    """
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted=False).numpy()
    ids = resolve_ids(example_ids, x.shape[0]).numpy()
    num_classes = int(model_fn(x[:1]).shape[-1])
    x_clean = x.numpy()
    x_adv = x_clean.copy()
    still_correct = correct(model_fn, x_clean, labels, batch_size)
    nb_targets = min(nb_targets, num_classes - 1)
    for _, attack, kwargs in components(nb_iter, restarts, nb_targets, nb_queries, seed):
        todo = np.flatnonzero(still_correct)
        if todo.size == 0:
            break
        out = attack(model_fn, x_clean[todo], eps, y=labels[todo], clip_min=clip_min, clip_max=clip_max,
                     example_ids=ids[todo], **kwargs).numpy()
        x_adv[todo] = out
        still_correct[todo] = correct(model_fn, out, labels[todo], batch_size)
    return tf.constant(x_adv)
