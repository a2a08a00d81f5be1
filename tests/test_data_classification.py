"""Any TFDS image-classification set by name: metadata, pixels, defense settings, clear errors."""

import json
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from great_tf.data import ClassificationInfo, classification_info, load_classification
from great_tf.data.classification import image_and_label_keys, pixel_range
from great_tf.errors import GreatError

SHARED = os.environ.get("TFDS_DATA_DIR", "")


def raw_examples(name, split, count):
    """The first `count` stored examples, read by TFDS directly (uint8 pixels, int64 labels)."""
    ds = tfds.load(name, split=f"{split}[:{count}]", data_dir=SHARED, download=False)
    examples = list(tfds.as_numpy(ds))
    return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


@pytest.mark.parametrize("name, shape, eps, beta_max", [
    ("mnist", (28, 28, 1), 0.2, 10.0),
    ("cifar10", (32, 32, 3), 0.1, 2.0),
])
def test_the_paper_s_sets_on_disk_keep_today_s_settings_and_pixels(name, shape, eps, beta_max):
    info = classification_info(name)
    assert isinstance(info, ClassificationInfo)
    assert (info.input_shape, info.num_classes, info.pixel_range) == (shape, 10, (0, 255))
    assert (info.eps, info.beta_max) == (eps, beta_max)  # trainers/defense.py EPS, defense BETA_MAX
    images, labels = load_classification(name, "test", limit=20)
    raw_images, raw_labels = raw_examples(name, "test", 20)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(images, raw_images.astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(labels, raw_labels)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_a_limit_is_the_first_examples_of_the_whole_split():
    images, labels = load_classification("cifar10", "test")
    first, first_labels = load_classification("cifar10", "test", limit=7)
    assert len(images) == 1017 and first.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(first, images[:7])
    np.testing.assert_array_equal(first_labels, labels[:7])
    sliced, _ = load_classification("cifar10", "test[:10]", limit=3)  # a sliced split, then take
    np.testing.assert_array_equal(sliced, images[:3])


def test_svhn_keeps_the_paper_s_settings():
    info = classification_info("svhn_cropped")  # from the builder's code: no data needed
    assert (info.eps, info.beta_max) == (0.2, 10.0) and "paper" in info.settings_source


@pytest.mark.parametrize("name, shape, classes, eps, beta_max, rule", [
    ("fashion_mnist", (28, 28, 1), 10, 0.2, 10.0, "grayscale"),
    ("cifar100", (32, 32, 3), 100, 0.1, 2.0, "colour"),
    ("svhn_cropped", (32, 32, 3), 10, 0.2, 10.0, "paper"),
])
def test_any_image_classification_set_loads_on_mock_data(name, shape, classes, eps, beta_max, rule):
    with tfds.testing.mock_data(num_examples=6):
        info = classification_info(name)
        images, labels = load_classification(name, "train", limit=4)
        test_images, _ = load_classification(name, "test")
    assert (info.input_shape, info.num_classes, info.pixel_range) == (shape, classes, (0, 255))
    assert len(info.class_names) == classes
    assert (info.eps, info.beta_max) == (eps, beta_max) and rule in info.settings_source
    assert images.shape == (4, *shape) and images.dtype == np.float32
    assert test_images.shape == (6, *shape)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < classes


def test_an_unregistered_prepared_folder_loads_by_its_name(tmp_path):
    """A set built elsewhere (here: MNIST's test split renamed) loads from its folder alone."""
    source = os.path.join(SHARED, "mnist", "3.0.1")
    target = tmp_path / "my_digits" / "1.0.0"
    target.mkdir(parents=True)
    shutil.copy(os.path.join(source, "features.json"), target)
    shutil.copy(os.path.join(source, "mnist-test.tfrecord-00000-of-00001"),
                target / "my_digits-test.tfrecord-00000-of-00001")
    meta = json.load(open(os.path.join(source, "dataset_info.json"), encoding="utf-8"))
    meta.update(name="my_digits", version="1.0.0")
    meta["splits"] = [s for s in meta["splits"] if s["name"] == "test"]
    (target / "dataset_info.json").write_text(json.dumps(meta), encoding="utf-8")

    info = classification_info("my_digits", str(tmp_path))
    assert (info.input_shape, info.num_classes) == ((28, 28, 1), 10)
    assert (info.eps, info.beta_max) == (0.2, 10.0) and "grayscale" in info.settings_source
    images, labels = load_classification("my_digits", "test", str(tmp_path), limit=5)
    expected_images, expected_labels = load_classification("mnist", "test", limit=5)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_labels_beyond_the_declared_class_count_are_one_line(tmp_path):
    """MNIST's test split (labels 0..9) under metadata that declares 5 classes."""
    source = os.path.join(SHARED, "mnist", "3.0.1")
    target = tmp_path / "few_digits" / "1.0.0"
    target.mkdir(parents=True)
    features = open(os.path.join(source, "features.json"), encoding="utf-8").read()
    (target / "features.json").write_text(features.replace('"numClasses": "10"', '"numClasses": "5"'),
                                          encoding="utf-8")
    shutil.copy(os.path.join(source, "mnist-test.tfrecord-00000-of-00001"),
                target / "few_digits-test.tfrecord-00000-of-00001")
    meta = json.load(open(os.path.join(source, "dataset_info.json"), encoding="utf-8"))
    meta.update(name="few_digits", version="1.0.0")
    meta["splits"] = [s for s in meta["splits"] if s["name"] == "test"]
    (target / "dataset_info.json").write_text(json.dumps(meta), encoding="utf-8")
    assert classification_info("few_digits", str(tmp_path)).num_classes == 5
    message = one_line_error(load_classification, "few_digits", "test", str(tmp_path), 50)
    assert message.startswith("data set 'few_digits' split 'test' has labels outside 0..4 (e.g. 5; 28 of 50)")
    assert "but declares 5 classes" in message and "tfds build few_digits" in message


def one_line_error(call, *args):
    with pytest.raises(GreatError) as err:
        call(*args)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_set_missing_from_disk_names_itself_the_folder_and_tfds_build(tmp_path):
    message = one_line_error(load_classification, "cifar100", "train", str(tmp_path))
    assert "'cifar100'" in message and str(tmp_path) in message and "`tfds build cifar100`" in message


def test_a_set_that_is_not_image_classification_says_what_it_has():
    message = one_line_error(classification_info, "imdb_reviews")
    assert "not an image-classification set" in message and "text (Text)" in message
    assert "not an image-classification set" in one_line_error(load_classification, "imdb_reviews", "train")


def test_an_unknown_name_a_varying_size_and_a_missing_split_are_clear_errors():
    message = one_line_error(classification_info, "cifar1O")
    assert "'cifar1O' is neither a TFDS data set nor a prepared folder" in message and SHARED in message
    assert "varying size" in one_line_error(classification_info, "oxford_flowers102")
    message = one_line_error(load_classification, "mnist", "validation")
    assert "no split 'validation'" in message and "test, train" in message


def test_supervised_keys_find_an_image_and_label_under_other_names():
    features = tfds.features.FeaturesDict({
        "picture": tfds.features.Image(shape=(8, 8, 3)),
        "image": tfds.features.Image(shape=(8, 8, 3)),
        "kind": tfds.features.ClassLabel(num_classes=3),
    })
    assert image_and_label_keys(types.SimpleNamespace(features=features, supervised_keys=("picture", "kind"))) \
        == ("picture", "kind")
    assert image_and_label_keys(types.SimpleNamespace(features=features, supervised_keys=None)) is None


def test_pixel_range_follows_the_stored_dtype():
    assert pixel_range(np.uint8) == (0, 255)
    assert pixel_range(np.uint16) == (0, 65535)
    assert pixel_range(np.float32) == (0.0, 1.0)
