"""AutoAttack (Croce & Hein, ICML 2020), standard version, L-inf: APGD-CE, APGD-T, FAB-T and
Square, in that order, each on the examples still correctly classified (docs/design.md#attacks).

The one implementation of the protocol: `autoattack` runs it on arrays, and the robustness
table's "AA" column (great_tf.evaluation) runs it through `robust_after`, reusing the attacks the
table has already run on every example. `version="lite"` drops FAB-T (APGD-CE, APGD-T, Square:
cheaper, and what great_tf's tables called "AA" before FAB-T existed here).
"""

import numpy as np
import tensorflow as tf

from great_tf.attacks.apgd import apgd
from great_tf.attacks.fab import fab
from great_tf.attacks.square import square
from great_tf.attacks.utils import as_input, attack_labels, correct, resolve_ids
from great_tf.errors import GreatError

VERSIONS = {"standard": ("APGD-CE", "APGD-T", "FAB-T", "Square"), "lite": ("APGD-CE", "APGD-T", "Square")}
# AutoAttack's standard budgets.
STANDARD_BUDGET = {"apgd_iterations": 100, "apgd_restarts": 1, "apgd_targets": 9, "fab_iterations": 100,
                   "fab_targets": 9, "square_queries": 5000}


def components(version="standard", num_classes=None, seed=0, **budget):
    """The attacks of `version` in AutoAttack's order: (name, attack, keyword arguments), with the
    budgets of STANDARD_BUDGET unless given; the targets are capped at num_classes - 1."""
    if version not in VERSIONS:
        raise GreatError(f"unknown AutoAttack version {version!r}: use one of {', '.join(VERSIONS)}")
    unknown = set(budget) - set(STANDARD_BUDGET)
    if unknown:
        raise GreatError(f"unknown AutoAttack budget(s) {sorted(unknown)}: use {', '.join(STANDARD_BUDGET)}")
    b = {**STANDARD_BUDGET, **budget}
    cap = (lambda n: n) if num_classes is None else (lambda n: min(n, num_classes - 1))
    every = {
        "APGD-CE": (apgd, {"nb_iter": b["apgd_iterations"], "restarts": b["apgd_restarts"], "loss": "ce",
                           "seed": seed}),
        "APGD-T": (apgd, {"nb_iter": b["apgd_iterations"], "restarts": b["apgd_restarts"], "loss": "dlr",
                          "targeted": True, "nb_targets": cap(b["apgd_targets"]), "seed": seed}),
        "FAB-T": (fab, {"nb_iter": b["fab_iterations"], "nb_targets": cap(b["fab_targets"]), "seed": seed}),
        "Square": (square, {"nb_queries": b["square_queries"], "seed": seed}),
    }
    return tuple((name, *every[name]) for name in VERSIONS[version])


def robust_after(attacks_in_order, still_correct, attack_survivors, measured=None):
    """AutoAttack's protocol on flags: per example, whether it survives every attack.

    `still_correct` says which examples are correctly classified before any attack;
    `attack_survivors(name, attack, kwargs, todo)` runs one attack on the examples `todo`
    (indices) and returns, for each, whether it is still correct. `measured[name]`, an attack's
    outcome already known on EVERY example, is reused instead of run again: each attack's result
    on an example does not depend on the other examples of its batch, and an example survives the
    ensemble iff it survives each attack, so the flags do not depend on the order. The known
    outcomes go first so the attacks still to run see the fewest examples.
    """
    still = np.array(still_correct, bool)
    measured = measured or {}
    for name, _, _ in attacks_in_order:
        if name in measured:
            still &= measured[name]
    for name, attack, kwargs in attacks_in_order:
        todo = np.flatnonzero(still)
        if name in measured or todo.size == 0:
            continue
        still[todo] = attack_survivors(name, attack, kwargs, todo)
    return still


def autoattack(model_fn, x, eps, y=None, version="standard", clip_min=0.0, clip_max=1.0, seed=0,
               batch_size=256, example_ids=None, **budget):
    """AutoAttack on `x`: per example the first adversarial point found by APGD-CE, APGD-T, FAB-T
    and Square (`version="lite"`: without FAB-T), each run in that order on the examples not yet
    misclassified; where none is found, the last attack's output. Budgets (`apgd_iterations`,
    `apgd_restarts`, `apgd_targets`, `fab_iterations`, `fab_targets`, `square_queries`) default
    to AutoAttack's (STANDARD_BUDGET); targets are capped at the number of other classes. Every
    attack draws example k's noise from (seed, example_ids[k]), so an example's outcome does not
    depend on which others are attacked with it.
    """
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted=False).numpy()
    ids = resolve_ids(example_ids, x.shape[0]).numpy()
    num_classes = int(model_fn(x[:1]).shape[-1])
    x_clean = x.numpy()
    x_adv = x_clean.copy()

    def attack_survivors(name, attack, kwargs, todo):
        out = attack(model_fn, x_clean[todo], eps, y=labels[todo], clip_min=clip_min, clip_max=clip_max,
                     example_ids=ids[todo], **kwargs).numpy()
        x_adv[todo] = out
        return correct(model_fn, out, labels[todo], batch_size)

    robust_after(components(version, num_classes, seed, **budget),
                 correct(model_fn, x_clean, labels, batch_size), attack_survivors)
    return tf.constant(x_adv)
