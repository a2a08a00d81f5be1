"""Adversarial defense with GREAT and GREACE (Algorithm 1) and the paper's comparison methods.

`GreatDefense(main, auxiliary, mode)` trains a classifier by one of the registered modes
(`available_modes()`: baseline, adversarial, greace, great, great+ce); each mode is one file in
`great_tf/defense/modes/` (docs/design.md#defense). `build_defense` builds the paper's networks.
"""

from great_tf.defense.base import DefenseMode, GreatDefense, available_modes, mode_class
from great_tf.defense.greace import greace_surrogate
from great_tf.defense.networks import (ALPHA_MAX, BETA_MAX, FGSM_TRAIN_EPS, build_defense,
                                       build_networks)


def __getattr__(name):
    if name == "MODES":  # the registered modes, in the order of the paper's Table 1
        return available_modes()
    raise AttributeError(f"module 'great_tf.defense' has no attribute {name!r}")


__all__ = ["ALPHA_MAX", "BETA_MAX", "DefenseMode", "FGSM_TRAIN_EPS", "GreatDefense",
           "available_modes", "build_defense", "build_networks", "greace_surrogate", "mode_class"]
