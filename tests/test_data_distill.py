"""The sparse regime's stratified subset, validation splits, and the Tiny-ImageNet folder loader."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from great_tf.data import load_tiny_imagenet, stratified_indices, stratified_split, stratified_subset
from great_tf.data.tiny_imagenet import resize_center, resize_crop_flip
from great_tf.errors import GreatError


def unbalanced_labels():
    return np.repeat(np.arange(4), [400, 200, 100, 300])  # 1000 examples


def test_five_percent_is_stratified():
    labels = unbalanced_labels()
    idx = stratified_indices(labels, 0.05, seed=3)
    counts = np.bincount(labels[idx], minlength=4)
    np.testing.assert_array_equal(counts, [20, 10, 5, 15])
    assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)


def test_subset_is_reproducible_and_seeded():
    labels = unbalanced_labels()
    a = stratified_indices(labels, 0.05, seed=3)
    np.testing.assert_array_equal(a, stratified_indices(labels, 0.05, seed=3))
    assert not np.array_equal(a, stratified_indices(labels, 0.05, seed=4))
    np.testing.assert_array_equal(stratified_indices(labels, 1.0, seed=3), np.arange(1000))


def test_every_class_keeps_at_least_one_example_and_arrays_stay_aligned():
    labels = np.array([0] * 50 + [1] * 3)
    images = np.arange(53, dtype=np.float32)[:, None]
    x, y = stratified_subset((images, labels), labels, 0.05, seed=0)
    assert set(y) == {0, 1}
    np.testing.assert_array_equal(labels[x[:, 0].astype(int)], y)


def test_validation_split_is_disjoint_and_complete():
    labels = unbalanced_labels()
    ids = np.arange(1000)
    (rest_ids, rest_y), (val_ids, val_y) = stratified_split((ids, labels), labels, 0.1, seed=0)
    assert len(np.intersect1d(rest_ids, val_ids)) == 0 and len(rest_ids) + len(val_ids) == 1000
    np.testing.assert_array_equal(np.bincount(val_y), [40, 20, 10, 30])


def test_bad_fractions_are_one_line_errors():
    with pytest.raises(GreatError, match=r"\(0, 1\]"):
        stratified_indices(np.zeros(10), 0.0, seed=0)
    with pytest.raises(GreatError, match="no training examples"):
        stratified_split((np.zeros(10),), np.zeros(10), 1.0, seed=0)


def write_image(path, color, size=64, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    value = color if mode == "RGB" else color[0]
    Image.new(mode, (size, size), value).save(path, "JPEG", quality=100)


@pytest.fixture
def tiny_imagenet(tmp_path):
    """A Tiny-ImageNet-layout folder: 3 classes, 3 train and 2 val images each."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n003", "n001", "n002"]  # not sorted: the file's order defines the labels
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    colors = {"n003": (250, 0, 0), "n001": (0, 250, 0), "n002": (0, 0, 250)}
    lines = []
    for wnid in wnids:
        for i in range(3):
            mode = "L" if (wnid, i) == ("n002", 0) else "RGB"  # Tiny-ImageNet has grayscale JPEGs
            write_image(str(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"), colors[wnid], mode=mode)
        for i in range(2):
            name = f"val_{wnid}_{i}.JPEG"
            write_image(str(root / "val" / "images" / name), colors[wnid])
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return str(root)


def test_tiny_imagenet_loader_reads_the_layout(tiny_imagenet):
    x, y = load_tiny_imagenet(tiny_imagenet, "train")
    assert x.shape == (9, 64, 64, 3) and x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    # label 0 is n003 (red), the first line of wnids.txt
    assert x[0, 10, 10, 0] > 0.9 and x[0, 10, 10, 1] < 0.1
    assert np.allclose(x[6, ..., 0], x[6, ..., 2])  # grayscale read as RGB
    xv, yv = load_tiny_imagenet(tiny_imagenet, "val")
    assert xv.shape == (6, 64, 64, 3) and sorted(np.bincount(yv)) == [2, 2, 2]
    assert np.all(xv[yv == 2][..., 2] > 0.9)  # n002 is blue
    big, _ = load_tiny_imagenet(tiny_imagenet, "train", image_size=224, per_class=1)
    assert big.shape == (3, 224, 224, 3)


def test_tiny_imagenet_errors(tmp_path, tiny_imagenet):
    with pytest.raises(GreatError, match="does not exist"):
        load_tiny_imagenet(str(tmp_path / "nowhere"))
    os.remove(os.path.join(tiny_imagenet, "wnids.txt"))
    with pytest.raises(GreatError, match="wnids.txt"):
        load_tiny_imagenet(tiny_imagenet)


def test_resize_transforms():
    images = tf.random.uniform([2, 64, 64, 3])
    crops, labels = resize_crop_flip(64)((images, tf.constant([0, 1])), tf.constant([1, 2], tf.int64))
    assert crops.shape == (2, 64, 64, 3)
    again, _ = resize_crop_flip(64)((images, tf.constant([0, 1])), tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(crops, again)  # stateless: same seed, same crops
    big, _ = resize_center(224)(images, labels)
    assert big.shape == (2, 224, 224, 3)
