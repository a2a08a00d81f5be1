"""bench.defense times the compiled steps, not their warm-up (great_tf's 3x target is judged on it)."""

from bench import defense


def test_at_tiny_sizes_the_great_step_still_costs_more_than_the_baseline_step():
    """Every convolution of a GREAT+CE step runs three times: it cannot be faster than the
    baseline's. Timing the first call after the other models were built made it 0.1x."""
    seconds = defense.median_step_seconds(("baseline", "great+ce"), width=2, batch_size=4, steps=1, rounds=1)
    assert seconds["great+ce"] > seconds["baseline"], seconds
