"""Seeded, stratified subsets: the sparse regime (5 % of the training set) and validation splits.

Each class contributes round(fraction * its count) examples (at least one), drawn by a NumPy
generator seeded with `seed`, so the same (labels, fraction, seed) always gives the same subset
and the class proportions of the subset follow those of the full set.
"""

import numpy as np

from great_tf.errors import GreatError


def check_fraction(fraction, name="fraction"):
    if not 0.0 < fraction <= 1.0:
        raise GreatError(f"{name} must be in (0, 1], got {fraction}")


def stratified_indices(labels, fraction, seed):
    """Sorted indices of a stratified `fraction` of the examples (all of them for 1.0)."""
    check_fraction(fraction)
    labels = np.asarray(labels).reshape(-1)
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def select(arrays, indices):
    """The examples at `indices` of every array in a nest (tuple, list or dict) of arrays."""
    if isinstance(arrays, dict):
        return {k: np.asarray(v)[indices] for k, v in arrays.items()}
    return type(arrays)(np.asarray(a)[indices] for a in arrays)


def stratified_subset(arrays, labels, fraction, seed):
    """`arrays` restricted to a stratified `fraction` of its examples (the sparse regime)."""
    return select(arrays, stratified_indices(labels, fraction, seed))


def stratified_split(arrays, labels, held_out_fraction, seed):
    """(rest, held_out): a stratified `held_out_fraction` of the examples set aside (validation)."""
    check_fraction(held_out_fraction, "held_out_fraction")
    if held_out_fraction == 1.0:
        raise GreatError("a held-out fraction of 1.0 leaves no training examples")
    held = stratified_indices(labels, held_out_fraction, seed)
    rest = np.setdiff1d(np.arange(len(np.asarray(labels).reshape(-1))), held)
    return select(arrays, rest), select(arrays, held)
