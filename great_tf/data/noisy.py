"""The paper's noisy CIFAR-10 multi-task data set (supplement, "Multi-task learning").

Input: the grayscale image, salt-and-pepper noise on 4 % of its pixels (salt and pepper equally
likely), then speckle noise. The paper's "speckle noise with gaussian probability of 0.1" is read
as multiplicative Gaussian noise of variance 0.1, `x + x * n` with `n ~ N(0, 0.1)`, clipped to
[0, 1] (scikit-image's `random_noise(mode="speckle", var=0.1)` does the same).

Targets: the class; the colour image (colorization); Canny edges with sigma = 1 of the colour
image, an edge wherever any colour channel has one (edge detection); the clean grayscale image
(denoising, "Auto"). All images are float32 in [0, 1].

The noise is drawn once per split from the seed, as part of creating the data set, and the
result is cached to disk: Canny is the costly step and is never run in the input pipeline. A cache
file that does not read back whole is rebuilt, with a message (docs/design.md#data).
"""

import hashlib
import os
import sys
import zipfile
import zlib

import numpy as np

SALT_PEPPER_FRACTION = 0.04
SPECKLE_VARIANCE = 0.1
CANNY_SIGMA = 1.0
CACHE_VERSION = 1
TARGETS = ("class", "colour", "edges", "auto")
LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's weights


def to_gray(images):
    """(N, H, W, 3) floats in [0, 1] -> (N, H, W, 1)."""
    return (images @ LUMA)[..., None].astype(np.float32)


def salt_and_pepper(images, fraction, rng):
    """Sets `fraction` of the pixels (in expectation) to 0 or 1, each with probability 1/2."""
    noisy = images.copy()
    hit = rng.random(images.shape) < fraction
    salt = rng.random(images.shape) < 0.5
    noisy[hit & salt] = 1.0
    noisy[hit & ~salt] = 0.0
    return noisy


def speckle(images, variance, rng):
    """Multiplicative Gaussian noise `x + x * n`, `n ~ N(0, variance)`, clipped to [0, 1]."""
    noise = rng.normal(0.0, np.sqrt(variance), images.shape).astype(np.float32)
    return np.clip(images + images * noise, 0.0, 1.0)


def canny_edges(images, sigma=CANNY_SIGMA):
    """Binary Canny edge maps (N, H, W, 1) of colour images: an edge in any channel counts."""
    from skimage.feature import canny

    edges = np.zeros(images.shape[:3] + (1,), np.float32)
    for i, image in enumerate(images):
        channel_edges = [canny(image[..., c], sigma=sigma) for c in range(image.shape[-1])]
        edges[i, ..., 0] = np.logical_or.reduce(channel_edges)
    return edges


def make_noisy_multitask(images_uint8, labels, seed):
    """Builds the multi-task arrays from uint8 colour images: (inputs, targets dict)."""
    rng = np.random.default_rng(seed)
    colour = images_uint8.astype(np.float32) / 255.0
    gray = to_gray(colour)
    noisy = speckle(salt_and_pepper(gray, SALT_PEPPER_FRACTION, rng), SPECKLE_VARIANCE, rng)
    targets = {
        "class": labels.astype(np.int32),
        "colour": colour,
        "edges": canny_edges(colour),
        "auto": gray,
    }
    return noisy.astype(np.float32), targets


def default_cache_dir():
    return os.path.expanduser(os.environ.get("GREAT_TF_CACHE", "~/.cache/great_tf"))


def read_cache(path):
    """(inputs, targets) stored at `path`, or None if the file is unreadable or incomplete (a
    killed writer, a full disk, a flipped bit): the caller then rebuilds it."""
    try:
        with np.load(path) as stored:
            inputs = stored["inputs"]
            targets = {k[len("t_"):]: stored[k] for k in stored.files if k.startswith("t_")}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        print(f"the noisy CIFAR-10 cache {path} is unreadable ({reason}): rebuilding it", file=sys.stderr,
              flush=True)
        return None
    if set(targets) != set(TARGETS) or any(len(t) != len(inputs) for t in targets.values()):
        print(f"the noisy CIFAR-10 cache {path} is incomplete: rebuilding it", file=sys.stderr, flush=True)
        return None
    return inputs, targets


def cached_noisy_multitask(images_uint8, labels, seed, cache_dir=None):
    """`make_noisy_multitask`, stored in `cache_dir` under a key of the images, labels and seed.

    A cache file that does not read back whole is rebuilt (and replaced), with a message.
    """
    digest = hashlib.sha1(images_uint8.tobytes() + labels.tobytes()).hexdigest()[:16]
    folder = cache_dir or default_cache_dir()
    path = os.path.join(folder, f"cifar10_noisy-v{CACHE_VERSION}-{digest}-seed{seed}.npz")
    if os.path.exists(path):
        cached = read_cache(path)
        if cached is not None:
            return cached
    inputs, targets = make_noisy_multitask(images_uint8, labels, seed)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, inputs=inputs, **{f"t_{k}": v for k, v in targets.items()})
        os.replace(tmp, path)  # atomic: a reader never sees a half-written cache
    except OSError:
        pass  # a read-only cache folder only costs recomputation
    return inputs, targets
