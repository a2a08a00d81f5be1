"""The paper's distillation experiment (Table 3) as library pieces: data, networks, settings.

`trainers.distill` and `tuning.distill` only parse flags and call these
(docs/design.md#distillation).
"""

from dataclasses import dataclass

from great_tf.errors import GreatError

STUDENTS = ("cnn5", "resnet18")
TEACHERS = ("resnet18", "resnext29", "resnet50", "resnet152", "cnn5")
REGIMES = (1.0, 0.05)  # dense and sparse (paper Sec. 3.2)
PAPER_WIDTH = {"cnn5": 32, "resnet18": 64}
PAPER_TABLE3 = {  # (student, teacher) -> method -> (100 %, 5 %) test accuracy
    ("cnn5", "resnet18"): {"baseline": (84.74, 65.41), "distill": (85.69, 66.45),
                           "sobolev": (84.98, 66.50), "great": (85.72, 66.55)},
    ("resnet18", "resnext29"): {"baseline": (93.19, 66.73), "distill": (93.65, 67.69),
                                "great": (93.43, 67.80)},
    ("resnet18", "resnet152"): {"baseline": (59.24, 14.41), "distill": (51.72, 16.73),
                                "great": (59.80, 16.82)},  # mini-ImageNet 64x64
}
# The supplement's grid-search optimum for CNN-5 + ResNet-18, per regime (alpha, T).
PAPER_DISTILL = {1.0: (0.1, 20.0), 0.05: (0.99, 20.0)}
# Flipping changes a digit's meaning; CIFAR-like photos are flipped (the paper's augmentation).
NO_FLIP = ("mnist", "svhn_cropped", "fashion_mnist", "emnist", "kmnist")


@dataclass
class DistillData:
    """Training and test arrays plus the pipeline transforms of one data set."""

    train: tuple
    test: tuple
    num_classes: int
    augment: callable
    eval_transform: callable = None
    input_shape: tuple = None

    def __post_init__(self):
        if self.input_shape is None:
            self.input_shape = tuple(self.train[0].shape[1:])

    def test_dataset(self, batch_size):
        from great_tf.data import eval_dataset

        ds = eval_dataset(self.test, batch_size)
        return ds if self.eval_transform is None else ds.map(self.eval_transform)

    def probe(self, count=32):
        """The first `count` test examples as the model sees them (for summaries)."""
        from great_tf.data import take

        probe = take(self.test, count)
        if self.eval_transform is not None:
            probe = tuple(t.numpy() for t in self.eval_transform(*probe))
        return probe


def load_distill_data(dataset, data_dir=None, train_limit=None, eval_limit=None, image_size=64):
    """Any prepared TFDS image-classification set by name, or `tiny_imagenet` from a folder."""
    from great_tf.data import load_classification, take
    from great_tf.data.augment import augment_images
    from great_tf.data.classification import classification_info

    if dataset == "tiny_imagenet":
        from great_tf.data.tiny_imagenet import load_tiny_imagenet, resize_center, resize_crop_flip

        if not data_dir:
            raise GreatError("--dataset tiny_imagenet needs --data-dir TINY_IMAGENET_ROOT")
        train = take(load_tiny_imagenet(data_dir, "train"), train_limit)
        test = take(load_tiny_imagenet(data_dir, "val"), eval_limit)
        return DistillData(train, test, int(max(train[1].max(), test[1].max())) + 1,
                           resize_crop_flip(image_size), resize_center(image_size),
                           input_shape=(image_size, image_size, 3))
    info = classification_info(dataset, data_dir)
    train = load_classification(dataset, "train", data_dir, train_limit)
    test = load_classification(dataset, "test", data_dir, eval_limit)
    return DistillData(train, test, info.num_classes,
                       augment_images(pad=4, flip=dataset not in NO_FLIP))


def stem_for(input_shape):
    """The supplement's ResNet stems: 3x3 stride 1 at 32x32, stride 2 at 64x64, ImageNet's at 224."""
    size = input_shape[0]
    return "imagenet" if size >= 128 else "stride2" if size >= 64 else "cifar"


def build_network(arch, input_shape, num_classes, width):
    """A student or teacher network by name (STUDENTS, TEACHERS)."""
    from great_tf import models

    if arch == "cnn5":
        return models.cnn5(input_shape, num_classes, width)
    if arch == "resnext29":
        return models.resnext29(input_shape, num_classes, width)
    depths = {"resnet18": 18, "resnet50": 50, "resnet152": 152}
    if arch not in depths:
        raise GreatError(f"unknown network {arch!r}: choose one of {', '.join(TEACHERS)}")
    return models.resnet(input_shape, num_classes, depths[arch], width, stem_for(input_shape), name=arch)


def build_discriminator(student_arch, input_shape, width):
    """CNN-5 students get the LeakyReLU CNN-5, ResNet students the ResNet-11 (supplement)."""
    from great_tf import models

    if student_arch == "cnn5":
        return models.cnn5_discriminator(input_shape, width)
    strides = 1 if stem_for(input_shape) == "cifar" else 2
    return models.resnet11_discriminator(input_shape, width, strides)


def student_width(student, requested, width):
    """The student's width: as requested, else the paper's (CNN-5: 32), else the run's `width`."""
    return requested or (PAPER_WIDTH["cnn5"] if student == "cnn5" else width)


def method_hyperparameters(method, fraction, alpha=0.1, sobolev_alpha=0.1, distill_alpha=None,
                           temperature=None):
    """The method's alpha (and T): as given, else the paper's values for the regime."""
    if method == "great":
        return {"alpha": alpha}
    if method == "sobolev":
        return {"alpha": sobolev_alpha}
    if method == "distill":
        paper_alpha, paper_temperature = PAPER_DISTILL.get(fraction, PAPER_DISTILL[1.0])
        return {"alpha": paper_alpha if distill_alpha is None else distill_alpha,
                "temperature": paper_temperature if temperature is None else temperature}
    return {}


def build_student_model(method, student_arch, data, teacher, width, steps, epochs, **params):
    """(compiled distiller, its student network) for one method."""
    from great_tf.distill import build_distiller, compile_distiller

    student = build_network(student_arch, data.input_shape, data.num_classes, width)
    disc = build_discriminator(student_arch, data.input_shape, width) if method == "great" else None
    model = build_distiller(method, teacher, student, disc, **params)
    return compile_distiller(model, steps, epochs), student


def regime_name(fraction):
    return f"{100 * fraction:g}pct"


def table3_rows(results, student, teacher_name):
    """Table 3's layout: (rows, columns): one row per method, one accuracy column per regime,
    the paper's beside ours."""
    from great_tf.distill import METHOD_NAMES

    fractions = sorted({r["fraction"] for r in results}, reverse=True)
    paper = PAPER_TABLE3.get((student, teacher_name), {})
    columns = ["method"] + [regime_name(f).replace("pct", " %") for f in fractions]
    columns += [f"paper {c}" for c in columns[1:] if paper] + [f"train s ({regime_name(f)})" for f in fractions]
    rows = []
    for method in dict.fromkeys(r["method"] for r in results):
        row = {"method": METHOD_NAMES.get(method, method)}
        for r in (r for r in results if r["method"] == method):
            label = regime_name(r["fraction"]).replace("pct", " %")
            row[label] = r["test accuracy"]
            row[f"train s ({regime_name(r['fraction'])})"] = r["train s"]
            if method in paper and r["fraction"] in REGIMES:
                row[f"paper {label}"] = paper[method][REGIMES.index(r["fraction"])]
        rows.append(row)
    return rows, columns, bool(paper)
