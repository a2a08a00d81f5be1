"""One module per multi-task benchmark; each registers itself (great_tf/mtl/benchmarks.py)."""
