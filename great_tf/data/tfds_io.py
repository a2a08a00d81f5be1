"""Reading TFDS splits into memory, offline, with one-line errors for every way a data folder can
be unusable: missing, never prepared, a file missing, a file truncated or corrupt
(docs/design.md#data)."""

import contextlib
import os
import re

import numpy as np

from great_tf.errors import GreatError

DEFAULT_TFDS_DIR = os.path.join("~", "tensorflow_datasets")
READ_CHUNK = 4096


def resolve_data_dir(data_dir=None):
    """`data_dir`, else `$TFDS_DATA_DIR`, else TFDS' own default folder."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR)


def rebuild_hint(name, folder):
    return (f"delete {folder} and prepare {name} again (`tfds build {name}` on a machine with "
            f"internet access, then copy its folder), or point --data-dir / TFDS_DATA_DIR at a "
            f"good copy")


def dataset_folder(name, data_dir):
    """The folder of `name`'s prepared version inside `data_dir` (what to delete and rebuild)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir, try_gcs=False).data_dir
    except Exception:  # noqa: BLE001 - only for a message: fall back to the data set's folder
        return os.path.join(data_dir, name.split("/")[0].split(":")[0])


def tfds_failure(err, name, split, folder):
    """The one-line `GreatError` for a TFDS/TensorFlow error met while reading `name` from its
    prepared `folder` (`dataset_folder`), or None when `err` is not a known data-folder failure."""
    import tensorflow as tf

    text = str(err)
    if isinstance(err, KeyError) and "splits" in text and "empty" in text:
        return GreatError(f"data set {name!r} in {folder} has no prepared files (no split is "
                          f"recorded there): {rebuild_hint(name, folder)}")
    if isinstance(err, tf.errors.DataLossError):
        detail = re.search(r"(truncated record at \d+|corrupted record at \d+)", text)
        detail = detail.group(1) if detail else "unreadable record"
        return GreatError(f"data set {name!r} split {split!r} in {folder} has a truncated or corrupt "
                          f"file ({detail}): {rebuild_hint(name, folder)}")
    if isinstance(err, tf.errors.NotFoundError):
        missing = re.search(r"(\S+\.tfrecord\S*); No such file", text)
        what = f"file {missing.group(1)}" if missing else "a data file"
        return GreatError(f"data set {name!r} split {split!r} in {folder}: {what} is missing: "
                          f"{rebuild_hint(name, folder)}")
    return None


@contextlib.contextmanager
def tfds_errors(name, split, data_dir=None):
    """Turns the failures `tfds_failure` knows, met while opening or reading `name` from the TFDS
    folder `data_dir`, into their one-line `GreatError`."""
    import tensorflow as tf

    try:
        yield
    except (KeyError, tf.errors.DataLossError, tf.errors.NotFoundError) as err:
        failure = tfds_failure(err, name, split, dataset_folder(name, resolve_data_dir(data_dir)))
        if failure is None:
            raise
        raise failure from None


def read_numpy(dataset):
    """A finite tf.data dataset of dicts or tuples as one list of NumPy chunks (read in chunks rather
    than batch_size=-1, which aborts under tfds.testing.mock_data)."""
    import tensorflow_datasets as tfds

    return list(tfds.as_numpy(dataset.batch(READ_CHUNK)))


def load_arrays(name, split, data_dir=None, download=False):
    """A whole TFDS split as a dict of NumPy arrays (`image`, `label`, ...).

    Never downloads unless asked: a data set that is not on disk, not prepared, or has a missing,
    truncated or corrupt file raises a one-line `GreatError` naming the data set, the folder and
    the fix.
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
    except KeyError as err:
        failure = tfds_failure(err, name, split, dataset_folder(name, folder))
        if failure is None:
            raise
        raise failure from None
    with tfds_errors(name, split, folder):
        chunks = read_numpy(dataset)
    if not chunks:
        raise GreatError(f"data set {name!r} split {split!r} in {folder} is empty")
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}
