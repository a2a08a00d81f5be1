"""The search-effort columns of `python -m tuning.distill`'s table, from made-up trial scores."""

import argparse
import itertools

import numpy as np
import pytest

from tuning import distill as tuning


def first_near_best_over_every_order(vals, near):
    """The mean position (from 1) of the first score within `near` of the best, over every order
    in which a random search could draw the settings: the definition, enumerated."""
    best = max(vals)
    positions = [next(i + 1 for i, v in enumerate(order) if v >= best - near)
                 for order in itertools.permutations(vals)]
    return float(np.mean(positions))


@pytest.mark.parametrize("vals", [
    [50.0, 60.0, 59.8, 40.0, 59.0],   # two within 0.5 of the best, one just outside
    [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],  # only the best itself
    [70.0, 70.2, 70.4, 70.1],          # every setting within 0.5
    [33.0],
])
def test_random_trials_to_near_best_is_the_mean_over_every_draw_order(vals):
    assert tuning.random_trials_to_near_best(vals) == pytest.approx(
        first_near_best_over_every_order(vals, tuning.NEAR_BEST))


def test_the_summary_row_counts_trials_in_run_order_and_for_a_random_search():
    trials = [(1, {"alpha": 0.01}, 61.0, 60.0), (2, {"alpha": 0.1}, 65.0, 64.0),
              (3, {"alpha": 0.2}, 64.8, 63.0), (4, {"alpha": 0.5}, 65.0, 62.0),
              (5, {"alpha": 1.0}, 50.0, 49.0)]
    row = tuning.summarize("great", argparse.Namespace(fraction=1.0), trials)
    assert row["trials to best"] == 2  # the first to reach 65.0, not the tie at trial 4
    assert row["trials to within 0.5"] == 2
    assert row["random trials to within 0.5"] == pytest.approx(6 / 4)  # 3 of 5 within 0.5
    assert row["best hyperparameters"] == "alpha 0.1" and row["test % at best"] == 64.0
    assert row["paper default val %"] == 65.0  # GREAT's alpha 0.1
    assert (row["val % min"], row["val % max"]) == (50.0, 65.0)
    assert row["val % std"] == pytest.approx(np.std([61.0, 65.0, 64.8, 65.0, 50.0]))
