"""mini-ImageNet as the paper uses it (200 classes, 500 train / 50 test images each), read from a
folder in the Tiny-ImageNet layout:

    ROOT/wnids.txt                       one class id (WordNet id) per line
    ROOT/train/<wnid>/images/*.JPEG      500 training images per class
    ROOT/val/images/*.JPEG               50 per class, labelled by
    ROOT/val/val_annotations.txt         "<file>\t<wnid>\t..." lines

The "val" split is the paper's test set (Tiny-ImageNet's own test split has no labels). Class
indices follow the order of wnids.txt. Images are 64x64; the paper's 224x224 runs upsample them:
load at 64 and let `resize_crop_flip` / `resize_center` produce 224 per batch in the pipeline
(the full training set at 224x224 in float32 would need 60 GB of memory).

Augmentation (supplement): images "randomly scaled and resized to have minimum dimension of 70"
(256 at 224x224), then a random 64x64 (224x224) crop. We read it as: resize to min_side x
min_side, take a random crop, flip horizontally with probability 1/2 (as in every other experiment
of the paper); evaluation resizes to min_side and takes the central crop.
"""

import os

import numpy as np
import tensorflow as tf

from great_tf.errors import GreatError

NATIVE_SIZE = 64
MIN_SIDE = {64: 70, 224: 256}


def read_class_ids(root):
    path = os.path.join(root, "wnids.txt")
    if not os.path.exists(path):
        raise GreatError(f"{root} is not a Tiny-ImageNet folder: {path} is missing")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def list_split(root, split, class_ids):
    """[(image path, class index)] of `split` ("train" or "val"), in a fixed order."""
    index = {wnid: i for i, wnid in enumerate(class_ids)}
    if split == "train":
        items = []
        for wnid in class_ids:
            folder = os.path.join(root, "train", wnid, "images")
            if not os.path.isdir(folder):
                raise GreatError(f"class {wnid} of wnids.txt has no folder {folder}")
            items += [(os.path.join(folder, f), index[wnid]) for f in sorted(os.listdir(folder))
                      if f.lower().endswith((".jpeg", ".jpg", ".png"))]
        return items
    if split in ("val", "test"):
        path = os.path.join(root, "val", "val_annotations.txt")
        if not os.path.exists(path):
            raise GreatError(f"{path} is missing: the labelled test images of Tiny-ImageNet are "
                             f"its val split")
        items = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.strip().split("\t")
                if len(fields) < 2:
                    continue
                if fields[1] not in index:
                    raise GreatError(f"{path} names class {fields[1]}, which wnids.txt lacks")
                items.append((os.path.join(root, "val", "images", fields[0]), index[fields[1]]))
        return sorted(items)
    raise GreatError(f"unknown Tiny-ImageNet split {split!r}: use 'train' or 'val'")


def read_image(path, image_size):
    from PIL import Image

    with Image.open(path) as image:  # some Tiny-ImageNet images are grayscale: make all RGB
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(image, np.uint8)


def limit_per_class(items, limit):
    if limit is None:
        return items
    counts, kept = {}, []
    for path, label in items:
        if counts.get(label, 0) < limit:
            counts[label] = counts.get(label, 0) + 1
            kept.append((path, label))
    return kept


def load_tiny_imagenet(root, split="train", image_size=NATIVE_SIZE, per_class=None):
    """(images float32 in [0, 1] of shape (N, size, size, 3), labels int32) of a Tiny-ImageNet
    folder; `per_class` keeps the first N images of every class."""
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise GreatError(f"mini-ImageNet folder {root} does not exist: pass the Tiny-ImageNet root")
    items = limit_per_class(list_split(root, split, read_class_ids(root)), per_class)
    if not items:
        raise GreatError(f"no images found for split {split!r} under {root}")
    images = np.stack([read_image(path, image_size) for path, _ in items])
    labels = np.asarray([label for _, label in items], np.int32)
    return images.astype(np.float32) / 255.0, labels


def resize_crop_flip(size, min_side=None):
    """An `augment(batch, seed)` for `train_dataset`: resize to min_side, random size x size crop,
    random horizontal flip (stateless, so resumed runs see the same crops)."""
    min_side = min_side or MIN_SIDE.get(size, size)

    def augment(batch, seed):
        images, labels = batch
        images = tf.image.resize(images, (min_side, min_side))
        n = tf.shape(images)[0]
        offsets = tf.random.stateless_uniform([n, 2], seed, 0, min_side - size + 1, dtype=tf.int32)
        crops = tf.map_fn(lambda a: tf.slice(a[0], [a[1][0], a[1][1], 0], [size, size, 3]),
                          (images, offsets), fn_output_signature=images.dtype)
        mirror = tf.random.stateless_uniform([n, 1, 1, 1], seed + 1) < 0.5
        return tf.where(mirror, tf.reverse(crops, axis=[2]), crops), labels

    return augment


def resize_center(size, min_side=None):
    """The evaluation transform: resize to min_side and take the central size x size crop."""
    min_side = min_side or MIN_SIDE.get(size, size)
    start = (min_side - size) // 2

    def transform(images, labels):
        images = tf.image.resize(images, (min_side, min_side))
        return images[:, start:start + size, start:start + size, :], labels

    return transform
