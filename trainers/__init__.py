"""Runnable experiments: `python -m trainers.mtl`, and one module per GREAT use."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
