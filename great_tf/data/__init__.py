"""Data sets for the GREAT experiments, read from TFDS folders with no network.

`load_classification(name)` gives (images in [0, 1], labels) for any prepared TFDS image
classification data set, `classification_info(name)` its shape, classes and defense settings;
`load_cifar10_noisy()` gives the multi-task data set of the paper's CIFAR-10 experiment.
"""

from great_tf.data.classification import ClassificationInfo, classification_info, load_classification
from great_tf.data.noisy import cached_noisy_multitask
from great_tf.data.pipeline import eval_dataset, num_examples, steps_per_epoch, take, train_dataset
from great_tf.data.tfds_io import load_arrays, resolve_data_dir
from great_tf.errors import GreatError

# The paper's classification sets: name -> (TFDS name, number of classes, image shape). Any other
# prepared TFDS image-classification set loads too (`classification_info`).
CLASSIFICATION = {
    "cifar10": ("cifar10", 10, (32, 32, 3)),
    "mnist": ("mnist", 10, (28, 28, 1)),
    "svhn_cropped": ("svhn_cropped", 10, (32, 32, 3)),
}
MULTITASK = ("cifar10_noisy",)


def check_name(name, known):
    if name not in known:
        raise GreatError(f"unknown data set {name!r}: choose one of {', '.join(known)}")


def load_cifar10_noisy(split, data_dir=None, seed=0, limit=None, cache_dir=None):
    """The noisy multi-task CIFAR-10 split: (grayscale noisy inputs, targets dict), cached.

    The noise is seeded by `seed` and the split name, so train and test get different noise.
    """
    arrays = load_arrays("cifar10", split, data_dir)
    images, labels = take(arrays["image"], limit), take(arrays["label"], limit)
    split_seed = seed * 1000 + (0 if split.startswith("train") else 1)
    return cached_noisy_multitask(images, labels, split_seed, cache_dir)


__all__ = [
    "CLASSIFICATION",
    "ClassificationInfo",
    "classification_info",
    "MULTITASK",
    "eval_dataset",
    "load_arrays",
    "load_cifar10_noisy",
    "load_classification",
    "num_examples",
    "steps_per_epoch",
    "resolve_data_dir",
    "take",
    "train_dataset",
]

# Knowledge distillation: the sparse regime / validation splits and mini-ImageNet folders.
from great_tf.data.splits import stratified_indices, stratified_split, stratified_subset  # noqa: E402
from great_tf.data.tiny_imagenet import load_tiny_imagenet  # noqa: E402

__all__ += ["load_tiny_imagenet", "stratified_indices", "stratified_split", "stratified_subset"]
