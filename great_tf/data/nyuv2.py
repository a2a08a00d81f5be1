"""NYUv2 for multi-task learning: RGB in, depth and surface normals out (docs/design.md#nyuv2).

Source: TFDS `nyu_depth_v2`, the NYUv2 preprocessing of Ma and Karaman's "sparse-to-dense":
split `train` (47,584 frames of the raw videos; their depth keeps the Kinect's holes as zeros)
and `validation` (the 654 official labelled test images, depth in-painted). Frames are 480x640
RGB with depth in metres. This is not the paper's split (26,328 training and 18,582 test frames
of its own, by scene, with keypoint labels): figures on it are comparable with each other and
with LibMTL-style NYUv2 results only loosely, never with the paper's rows.

One example (the paper's sizes by default, `image_size` and `target_size` to change them):

- input: the RGB frame resized to image_size x image_size (antialiased bilinear; the aspect
  ratio changes, as in GradNorm's set-up the paper follows), uint8 on disk, float32 in [0, 1]
  in the pipeline;
- `depth`: (target_size, target_size, 1) float32 metres, the mean of the valid source pixels
  each target pixel covers; 0 (invalid, masked out of every loss and metric) where fewer than
  `MIN_VALID_FRACTION` of them are valid;
- `normals`: (target_size, target_size, 3) float32 unit vectors derived from that depth target
  (great_tf/data/normals.py: back-projection with the NYUv2 toolbox's camera, cross product of
  the tangents, oriented towards the camera); 0 where invalid.

**Room keypoints**, the paper's third task (48 Gaussian heatmaps from professional labelling),
are not public, so no loader can provide them. The task list is a parameter everywhere: with
your own labels (keypoint heatmaps, or segmentation as LibMTL uses) pass them as extra targets
to the benchmark (`great_tf.mtl.datasets.nyu_depth_v2.nyuv2_benchmark`), in TFDS' order of the
split, and the encoder and every method take the new task unchanged.

Everything derived is computed once per (split, limit, sizes) in one streaming pass and cached
as memory-mapped `.npy` files under `$GREAT_TF_CACHE` (default ~/.cache/great_tf); the full
training split at the paper's sizes takes about 19.5 GB there (images 14.6 GB). Training then
reads batches from the memory maps (great_tf/data/mapped.py), never the whole split into memory.
"""

import hashlib
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from great_tf.data.noisy import default_cache_dir
from great_tf.data.normals import NYUV2_INTRINSICS, normals_from_depth
from great_tf.data.tfds_io import resolve_data_dir
from great_tf.errors import GreatError

TFDS_NAME = "nyu_depth_v2"
SPLITS = ("train", "validation")
DERIVED_TASKS = ("depth", "normals")
IMAGE_SIZE, TARGET_SIZE = 320, 80  # the paper's (and GradNorm's) input and output sizes
MIN_VALID_FRACTION = 0.5
CACHE_VERSION = 1
PREPARE_CHUNK = 32


def resize_images(images, size):
    """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3), antialiased bilinear."""
    resized = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def resize_depth(depth, size, min_valid_fraction=MIN_VALID_FRACTION):
    """(N, H, W) metres, 0 = invalid -> (N, size, size) float32: the mean of the valid source
    pixels under each target pixel (area weights), 0 where less than `min_valid_fraction` of the
    area is valid. Invalid zeros never blend into the valid depth."""
    depth = tf.cast(depth, tf.float32)[..., None]
    valid = tf.cast(depth > 0, tf.float32)
    area_sum = tf.image.resize(depth * valid, (size, size), method="area")
    area_valid = tf.image.resize(valid, (size, size), method="area")
    keep = area_valid >= min_valid_fraction
    mean = area_sum / tf.where(keep, area_valid, 1.0)
    return tf.where(keep, mean, 0.0)[..., 0]


def derived_targets(depth, target_size):
    """Target-size depth (N, T, T, 1) and normals (N, T, T, 3) from source depth (N, H, W)."""
    small = resize_depth(depth, target_size).numpy()
    camera = NYUV2_INTRINSICS.resized(target_size, target_size)
    normals, _ = normals_from_depth(small, camera)
    return small[..., None].astype(np.float32), normals


# -- reading TFDS -------------------------------------------------------------------------------
def missing_message(split, folder):
    return (f"data set {TFDS_NAME!r} (split {split!r}) is not in {folder}: prepare it with "
            f"`tfds build {TFDS_NAME} --data_dir {folder}` on a machine with internet (a 32 GB "
            f"download), then point --data-dir or TFDS_DATA_DIR at that folder")


def open_split(split, data_dir=None, limit=None):
    """(tf.data of {"image", "depth"} in TFDS' fixed order, number of examples, folder)."""
    import tensorflow_datasets as tfds

    if split not in SPLITS:
        raise GreatError(f"{TFDS_NAME} has the splits {' and '.join(SPLITS)} (TFDS' names), "
                         f"not {split!r}")
    folder = resolve_data_dir(data_dir)
    spec = f"{split}[:{limit}]" if limit else split
    try:
        dataset = tfds.load(TFDS_NAME, split=spec, data_dir=folder, download=False,
                            shuffle_files=False)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError):
        raise GreatError(missing_message(split, folder)) from None
    if limit:
        dataset = dataset.take(limit)  # tfds.testing.mock_data ignores slicing
    count = int(dataset.cardinality())
    if count < 0:  # unknown: count once (rare; TFDS splits know their size)
        count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    if count == 0:
        raise GreatError(f"split {split!r} of {TFDS_NAME} in {folder} is empty")
    return dataset, count, folder


def first_example_digest(dataset):
    """A fingerprint of the data itself, so a cache never mixes two copies (e.g. mock and real)."""
    example = next(iter(dataset.take(1)))
    return hashlib.sha1(example["image"].numpy().tobytes()
                        + example["depth"].numpy().tobytes()).hexdigest()[:16]


# -- the cache ----------------------------------------------------------------------------------
def cache_folder(split, limit, image_size, target_size, count, folder, digest, cache_dir=None):
    key = json.dumps([TFDS_NAME, split, limit, image_size, target_size, count, folder, digest,
                      CACHE_VERSION])
    name = (f"{TFDS_NAME}-v{CACHE_VERSION}-{split}-{image_size}x{target_size}-n{count}-"
            f"{hashlib.sha1(key.encode()).hexdigest()[:16]}")
    return os.path.join(cache_dir or default_cache_dir(), name)


def write_examples(dataset, arrays, image_size, target_size):
    """Resizes and derives every example of `dataset` into `arrays`; returns how many."""
    def resize(example):
        return resize_images(example["image"][None], image_size)[0], example["depth"]

    start = 0
    batches = dataset.map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(PREPARE_CHUNK)
    for images, depth in batches.prefetch(2):
        end = start + len(images)
        arrays["image"][start:end] = images.numpy()
        depth_target, normals = derived_targets(depth, target_size)
        arrays["depth"][start:end], arrays["normals"][start:end] = depth_target, normals
        start = end
    return start


def prepare(dataset, count, path, image_size, target_size):
    """One streaming pass over the split: writes image.npy, depth.npy and normals.npy to `path`
    (into a temporary folder first, renamed when complete, so readers never see half a cache)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(tmp, exist_ok=True)
        arrays = {
            "image": np.lib.format.open_memmap(os.path.join(tmp, "image.npy"), "w+", np.uint8,
                                               (count, image_size, image_size, 3)),
            "depth": np.lib.format.open_memmap(os.path.join(tmp, "depth.npy"), "w+", np.float32,
                                               (count, target_size, target_size, 1)),
            "normals": np.lib.format.open_memmap(os.path.join(tmp, "normals.npy"), "w+",
                                                 np.float32, (count, target_size, target_size, 3)),
        }
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GreatError(f"cannot write the {TFDS_NAME} cache under {os.path.dirname(path)} "
                         f"({err.strerror}): set GREAT_TF_CACHE to a writable folder with room "
                         f"for it") from None

    try:
        written = write_examples(dataset.take(count), arrays, image_size, target_size)
    except BaseException:  # interrupted or out of disk: leave no half-written folder behind
        del arrays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if written != count:
        del arrays
        shutil.rmtree(tmp, ignore_errors=True)
        raise GreatError(f"{TFDS_NAME} gave {written} examples where {count} were announced: "
                         f"the TFDS copy may be incomplete; rebuild it")
    for array in arrays.values():
        array.flush()
    del arrays
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


def load_nyuv2(split, data_dir=None, limit=None, image_size=IMAGE_SIZE, target_size=TARGET_SIZE,
               tasks=DERIVED_TASKS, cache_dir=None):
    """(images uint8 (N, S, S, 3), {task: targets}) of a split, memory-mapped from the cache.

    `tasks` picks among the derived targets ("depth", "normals"); `limit` keeps the first N
    examples in TFDS' order. Feed the result to `great_tf.data.mapped` pipelines, which turn the
    images into float32 in [0, 1] one batch at a time.
    """
    unknown = sorted(set(tasks) - set(DERIVED_TASKS))
    if unknown:
        raise GreatError(f"{TFDS_NAME} derives only {', '.join(DERIVED_TASKS)}; "
                         f"{', '.join(unknown)} must come with your own labels (see the "
                         f"nyu_depth_v2 benchmark's extra_targets)")
    for name, size in (("image_size", image_size), ("target_size", target_size)):
        if int(size) < 1:
            raise GreatError(f"{name} must be a positive number of pixels, got {size}")
    dataset, count, folder = open_split(split, data_dir, limit)
    path = cache_folder(split, limit, image_size, target_size, count, folder,
                        first_example_digest(dataset), cache_dir)
    if not os.path.isdir(path):
        print(f"preparing {TFDS_NAME} {split} ({count} examples, {image_size}x{image_size} "
              f"inputs, {target_size}x{target_size} targets) once, cached in {path}", flush=True)
        prepare(dataset, count, path, image_size, target_size)
    images = np.load(os.path.join(path, "image.npy"), mmap_mode="r")
    return images, {t: np.load(os.path.join(path, f"{t}.npy"), mmap_mode="r") for t in tasks}
