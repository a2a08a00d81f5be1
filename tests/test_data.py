import os

import numpy as np
import pytest
import tensorflow as tf

from great_tf.data import load_arrays, load_cifar10_noisy, load_classification, train_dataset
from great_tf.data import noisy
from great_tf.data.augment import pad_crop_flip
from great_tf.data.pipeline import steps_per_epoch
from great_tf.errors import GreatError


def test_salt_and_pepper_hits_four_percent_half_salt_half_pepper():
    rng = np.random.default_rng(0)
    gray = np.full((200, 32, 32, 1), 0.5, np.float32)
    out = noisy.salt_and_pepper(gray, noisy.SALT_PEPPER_FRACTION, rng)
    hit = out != 0.5
    n = gray.size
    tolerance = 4 * np.sqrt(0.04 * 0.96 / n)
    assert abs(hit.mean() - 0.04) < tolerance
    assert set(np.unique(out[hit])) == {0.0, 1.0}
    assert abs((out[hit] == 1.0).mean() - 0.5) < 0.03


def test_speckle_is_multiplicative_gaussian_with_variance_point_one():
    rng = np.random.default_rng(1)
    gray = np.full((100, 32, 32, 1), 0.25, np.float32)
    out = noisy.speckle(gray, noisy.SPECKLE_VARIANCE, rng)
    noise = out / 0.25 - 1.0  # x + x*n with x = 0.25 never reaches the clip at 1 for |n| < 3
    assert abs(noise.mean()) < 0.01
    assert abs(noise.var() - 0.1) < 0.005
    assert np.all(noisy.speckle(np.zeros_like(gray), 0.1, rng) == 0.0)  # multiplicative


def fake_images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[:, 8:24, 8:24, :] = 255  # a square: its border must come out as edges
    return images, rng.integers(0, 10, n)


def test_multitask_targets_shapes_ranges_and_binary_edges():
    images, labels = fake_images()
    inputs, targets = noisy.make_noisy_multitask(images, labels, seed=3)
    assert inputs.shape == (6, 32, 32, 1) and inputs.dtype == np.float32
    assert targets["colour"].shape == (6, 32, 32, 3)
    assert targets["edges"].shape == targets["auto"].shape == (6, 32, 32, 1)
    assert targets["class"].dtype == np.int32
    for array in (inputs, targets["colour"], targets["auto"]):
        assert array.min() >= 0.0 and array.max() <= 1.0
    assert set(np.unique(targets["edges"])) == {0.0, 1.0}
    np.testing.assert_allclose(targets["auto"][..., 0], targets["colour"] @ noisy.LUMA, rtol=1e-6)


def test_canny_marks_the_border_of_a_flat_square():
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 8:24, 8:24, 1] = 1.0  # green square only: an edge in one colour channel
    edges = noisy.canny_edges(image)[0, ..., 0]
    assert edges[8:24, 7:9].any() and edges[8:24, 23:25].any()
    assert not edges[12:20, 12:20].any() and not edges[:4, :4].any()


def test_noise_is_deterministic_under_a_seed():
    images, labels = fake_images()
    a, _ = noisy.make_noisy_multitask(images, labels, seed=5)
    b, _ = noisy.make_noisy_multitask(images, labels, seed=5)
    c, _ = noisy.make_noisy_multitask(images, labels, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_real_cifar10_noisy_is_cached_and_reloaded(cache_dir):
    inputs, targets = load_cifar10_noisy("test", seed=0, limit=16)
    assert inputs.shape == (16, 32, 32, 1)
    assert len(set(targets["class"].tolist())) > 3  # real labels, not a constant
    cached = os.listdir(cache_dir)
    assert len(cached) == 1 and cached[0].endswith(".npz")
    again, targets_again = load_cifar10_noisy("test", seed=0, limit=16)
    np.testing.assert_array_equal(again, inputs)
    np.testing.assert_array_equal(targets_again["edges"], targets["edges"])
    train, _ = load_cifar10_noisy("train", seed=0, limit=16)
    assert not np.array_equal(train, inputs)


def test_real_classification_data_is_scaled_to_unit_range():
    images, labels = load_classification("mnist", "test", limit=32)
    assert images.shape == (32, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == np.int32


def test_a_missing_data_set_names_itself_the_folder_and_the_fix(tmp_path):
    with pytest.raises(GreatError) as err:
        load_arrays("cifar10", "train", data_dir=str(tmp_path))
    message = str(err.value)
    assert "'cifar10'" in message and str(tmp_path) in message and "--data-dir" in message
    assert "\n" not in message


def test_an_unknown_data_set_is_a_clear_error():
    # cifar100 is a TFDS image-classification set, just not on disk (tests/test_data_classification.py)
    with pytest.raises(GreatError, match="'cifar1O' is neither a TFDS data set nor a prepared folder"):
        load_classification("cifar1O", "train")


def batches(ds):
    return [tuple(np.asarray(t) for t in tf.nest.flatten(b)) for b in ds]


def test_epoch_order_depends_only_on_seed_and_epoch():
    x = np.arange(10, dtype=np.float32)
    y = np.arange(10, dtype=np.int32) * 2
    full = batches(train_dataset((x, y), 4, seed=3, epochs=3))
    resumed = batches(train_dataset((x, y), 4, seed=3, epochs=3, initial_epoch=1))
    assert len(full) == 6 and len(resumed) == 4  # two full batches per epoch, remainder dropped
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
    first_epoch = np.concatenate([b[0] for b in full[:2]])
    second_epoch = np.concatenate([b[0] for b in full[2:4]])
    assert len(set(first_epoch)) == 8 and not np.array_equal(first_epoch, second_epoch)
    for xb, yb in full:
        np.testing.assert_array_equal(yb, xb * 2)  # inputs and targets stay paired
    other_seed = batches(train_dataset((x, y), 4, seed=4, epochs=1))
    assert not np.array_equal(other_seed[0][0], full[0][0])


def test_a_batch_larger_than_the_data_is_a_clear_error():
    with pytest.raises(GreatError, match="batch size 64 is larger than the 10"):
        steps_per_epoch(10, 64)


def test_pad_crop_flip_returns_a_shifted_or_mirrored_crop():
    images = tf.random.uniform([5, 8, 8, 1], seed=1)
    seed = tf.constant([1, 2], tf.int64)
    out = pad_crop_flip(images, seed).numpy()
    np.testing.assert_array_equal(out, pad_crop_flip(images, seed).numpy())
    padded = np.pad(images.numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)])
    for image, result in zip(padded, out):
        crops = [image[i:i + 8, j:j + 8] for i in range(9) for j in range(9)]
        crops += [c[:, ::-1] for c in crops]
        assert any(np.array_equal(result, c) for c in crops)


def test_svhn_loader_reads_a_tfds_split_on_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        images, labels = load_classification("svhn_cropped", "train", limit=4)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == np.int32 and set(labels.tolist()) <= set(range(10))
