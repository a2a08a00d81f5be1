"""Any prepared TFDS image-classification data set by name, offline.

    info = classification_info("fashion_mnist")        # shape, classes, pixel range, eps, beta_max
    images, labels = load_classification("fashion_mnist", "train", limit=1000)

Everything is read from the builder's metadata (the registered builder's code, or the
`dataset_info.json` and `features.json` of a prepared folder): nothing is downloaded. A data set
qualifies when its features hold a fixed-size `Image` and a `ClassLabel`, found through the
builder's supervised keys or else under the names `image` and `label`.

The adversarial-defense settings (eps of the attacks on the [0, 1] pixel scale, and beta_max of
the GREAT/GREACE schedule) are the paper's where it gives them (CIFAR-10: 0.1 and 2; SVHN: 0.2 and
10), ours for MNIST (0.2 and 10, as SVHN), and otherwise follow the input channels: grayscale sets
take MNIST's values, colour sets take CIFAR-10's. See docs/design.md#data.
"""

import dataclasses
import re

import numpy as np

from great_tf.data.pipeline import take
from great_tf.data.tfds_io import resolve_data_dir, tfds_errors, tfds_failure
from great_tf.errors import GreatError

READ_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    """eps (attack budget on the [0, 1] pixel scale), beta_max (GREAT/GREACE) and their origin."""

    eps: float
    beta_max: float
    source: str


# The paper's Sec. 3.1 and Tables 1-2; mnist is not in the paper (our choice: SVHN's values, as for
# another set of digits).
KNOWN_SETTINGS = {
    "cifar10": AttackSettings(0.1, 2.0, "the paper (CIFAR-10)"),
    "svhn_cropped": AttackSettings(0.2, 10.0, "the paper (SVHN)"),
    "mnist": AttackSettings(0.2, 10.0, "our choice for MNIST (SVHN's values)"),
}
# The rule for every other set: by the number of input channels.
GRAYSCALE_SETTINGS = AttackSettings(0.2, 10.0, "the rule for grayscale images (MNIST's values)")
COLOUR_SETTINGS = AttackSettings(0.1, 2.0, "the rule for colour images (CIFAR-10's values)")


@dataclasses.dataclass(frozen=True)
class ClassificationInfo:
    """What a model and a defense need to know about an image-classification data set."""

    name: str
    input_shape: tuple  # (height, width, channels)
    num_classes: int
    pixel_range: tuple  # (min, max) of the stored pixels; loaded images are divided by max
    class_names: tuple
    eps: float  # on the [0, 1] pixel scale of the loaded images
    beta_max: float
    settings_source: str  # where eps and beta_max come from
    image_key: str = "image"
    label_key: str = "label"


def attack_settings(name, channels):
    """The paper's (or our) eps and beta_max for `name`, else the rule by channel count."""
    if name in KNOWN_SETTINGS:
        return KNOWN_SETTINGS[name]
    return GRAYSCALE_SETTINGS if channels == 1 else COLOUR_SETTINGS


def open_builder(name, data_dir=None):
    """The TFDS builder of `name` from its code or its prepared folder, without network."""
    import tensorflow_datasets as tfds

    folder = resolve_data_dir(data_dir)
    try:
        return tfds.builder(name, data_dir=folder, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as err:
        suggestion = re.search(r"Did you mean: \S+ -> (\S+) ?\?", str(err))
        hint = f" (did you mean {suggestion.group(1)!r}?)" if suggestion else ""
        raise GreatError(
            f"{name!r} is neither a TFDS data set nor a prepared folder in {folder}{hint}: check the "
            f"name against `tfds.list_builders()`, or point --data-dir / TFDS_DATA_DIR at the folder "
            f"that holds {name}/"
        ) from None


def image_and_label_keys(info):
    """The feature names of the image and the class label, or None if the set has no such pair."""
    import tensorflow_datasets as tfds

    if not isinstance(info.features, tfds.features.FeaturesDict):
        return None
    features = dict(info.features.items())
    supervised = info.supervised_keys
    candidates = [("image", "label")]
    if isinstance(supervised, (tuple, list)) and len(supervised) == 2 and all(isinstance(k, str) for k in supervised):
        candidates.insert(0, tuple(supervised))
    for image_key, label_key in candidates:
        if (isinstance(features.get(image_key), tfds.features.Image)
                and isinstance(features.get(label_key), tfds.features.ClassLabel)):
            return image_key, label_key
    return None


def pixel_range(dtype):
    """(0, largest value) for integer pixels; float pixels are taken to be in [0, 1] already."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return (0, int(np.iinfo(dtype).max))
    return (0.0, 1.0)


def describe_features(features):
    return ", ".join(f"{key} ({type(feature).__name__})" for key, feature in features.items())


def classification_info(name, data_dir=None):
    """Input shape, class count, pixel range and defense settings of an image-classification set.

    Read from the builder's metadata, offline; raises a one-line `GreatError` for an unknown name,
    a set that is not image classification, or images of varying size.
    """
    return describe(open_builder(name, data_dir), name)


def describe(builder, name):
    """`classification_info` of an open builder."""
    keys = image_and_label_keys(builder.info)
    if keys is None:
        raise GreatError(
            f"data set {name!r} is not an image-classification set: it needs an Image feature and a "
            f"ClassLabel feature, and has {describe_features(builder.info.features)}"
        )
    image, label = (builder.info.features[key] for key in keys)
    shape = tuple(image.shape)
    if any(size is None for size in shape):
        raise GreatError(
            f"data set {name!r} has images of varying size {shape}: only fixed-size image sets load "
            f"here (e.g. cifar10, cifar100, mnist, fashion_mnist, svhn_cropped)"
        )
    settings = attack_settings(name, shape[-1])
    return ClassificationInfo(
        name=name, input_shape=shape, num_classes=int(label.num_classes),
        pixel_range=pixel_range(image.np_dtype), class_names=tuple(label.names),
        eps=settings.eps, beta_max=settings.beta_max, settings_source=settings.source,
        image_key=keys[0], label_key=keys[1],
    )


def sliced(split, limit):
    """`split` restricted to its first `limit` examples when TFDS can do it while reading."""
    if limit is None or "[" in split:
        return split
    return f"{split}[:{int(limit)}]"


def read_split(builder, name, split, keys, data_dir):
    """A split's image and label arrays; a one-line `GreatError` if it is missing from disk."""
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:  # TFDS' "could not find data ... call download_and_prepare()"
        folder = resolve_data_dir(data_dir)
        raise GreatError(
            f"data set {name!r} is not prepared in {folder}: run `tfds build {name}` on a machine "
            f"with internet access and copy its {name}/ folder there (or point --data-dir / "
            f"TFDS_DATA_DIR at a folder that holds it)"
        ) from None
    except ValueError as err:
        if "split" not in str(err).lower():
            raise
        known = ", ".join(sorted(builder.info.splits.keys())) or "unknown"
        raise GreatError(f"data set {name!r} has no split {split!r} (its splits: {known})") from None
    except KeyError as err:  # TFDS' "splits is empty": a folder with no prepared files
        failure = tfds_failure(err, name, split, builder.data_dir)
        if failure is None:
            raise
        raise failure from None
    image_key, label_key = keys
    dataset = dataset.map(lambda example: (example[image_key], example[label_key]))
    # Chunked rather than batch_size=-1, which aborts under tfds.testing.mock_data.
    import tensorflow_datasets as tfds

    with tfds_errors(name, split, data_dir):  # truncated, corrupt or missing files: one line
        chunks = list(tfds.as_numpy(dataset.batch(READ_CHUNK)))
    if not chunks:
        raise GreatError(f"data set {name!r} split {split!r} is empty")
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def check_labels(labels, info, split):
    """A one-line `GreatError` if a label is outside [0, num_classes): a set whose metadata
    declares fewer classes than its records hold would otherwise train a too-small output layer,
    and its cross-entropy fail inside the graph (or, on some devices, silently give nan)."""
    outside = labels[(labels < 0) | (labels >= info.num_classes)]
    if outside.size:
        raise GreatError(
            f"data set {info.name!r} split {split!r} has labels outside 0..{info.num_classes - 1} "
            f"(e.g. {int(outside[0])}; {outside.size} of {labels.size}) but declares "
            f"{info.num_classes} classes: its metadata (features.json) does not match its records; "
            f"rebuild it with `tfds build {info.name}`")


def load_classification(name, split, data_dir=None, limit=None):
    """(images float32 in [0, 1], labels int32) of a split, or of its first `limit` examples.

    Works for any prepared TFDS image-classification set (see `classification_info`); pixels are
    divided by the largest value their dtype can hold (255 for uint8).
    """
    builder = open_builder(name, data_dir)
    info = describe(builder, name)
    images, labels = read_split(builder, name, sliced(split, limit), (info.image_key, info.label_key), data_dir)
    images, labels = take((images, labels), limit)
    check_labels(labels, info, split)
    scale = info.pixel_range[1]
    images = np.asarray(images, np.float32)
    if scale != 1.0:
        images = images / np.float32(scale)
    return images, np.asarray(labels, np.int32)
