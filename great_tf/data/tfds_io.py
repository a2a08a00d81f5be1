"""Reading TFDS splits into memory, offline, with an error that says how to fix a missing data set."""

import os

import numpy as np

from great_tf.errors import GreatError

DEFAULT_TFDS_DIR = os.path.join("~", "tensorflow_datasets")
READ_CHUNK = 4096


def resolve_data_dir(data_dir=None):
    """`data_dir`, else `$TFDS_DATA_DIR`, else TFDS' own default folder."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR)


def load_arrays(name, split, data_dir=None, download=False):
    """A whole TFDS split as a dict of NumPy arrays (`image`, `label`, ...).

    Never downloads unless asked: a data set that is not on disk raises a one-line `GreatError`
    naming the data set, the folder searched, and the fix.
    """
    import tensorflow_datasets as tfds

    folder = resolve_data_dir(data_dir)
    try:
        dataset = tfds.load(name, split=split, data_dir=folder, download=download)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as err:
        if "split" in str(err).lower() and "unknown" in str(err).lower():
            raise GreatError(f"data set {name!r} has no split {split!r}: {err}") from None
        raise GreatError(
            f"data set {name!r} (split {split!r}) is not in {folder} and cannot be downloaded "
            f"here: point --data-dir or TFDS_DATA_DIR at a folder holding a prepared TFDS copy "
            f"of it, or run with network access once to download it"
        ) from None
    # Chunked rather than batch_size=-1, which aborts under tfds.testing.mock_data.
    chunks = list(tfds.as_numpy(dataset.batch(READ_CHUNK)))
    if not chunks:
        raise GreatError(f"data set {name!r} split {split!r} in {folder} is empty")
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
