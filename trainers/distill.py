"""Knowledge distillation with GREAT next to CE, Hinton distillation and Sobolev training
(paper Algorithm 2, Table 3).

    python -m trainers.distill --train-teacher resnet18 --dataset cifar10     # 1. the teacher
    python -m trainers.distill --teacher runs/distill/cifar10/teacher_resnet18/teacher.keras \\
        --student cnn5 --method all                                           # 2. Table 3
    python -m trainers.distill --teacher PATH --method great --fraction 0.05  # one method, sparse

`--method all` trains every method in the dense (100 %) and the sparse (5 %) regime and writes
Table 3's layout; `--fraction` restricts it to one regime. mini-ImageNet: `--dataset tiny_imagenet
--data-dir TINY_IMAGENET_ROOT [--image-size 224]`.
"""

import os

from great_tf.errors import GreatError
from trainers import flags

STUDENTS = ("cnn5", "resnet18")
TEACHERS = ("resnet18", "resnext29", "resnet50", "resnet152", "cnn5")
DATASETS = ("cifar10", "mnist", "svhn_cropped", "tiny_imagenet")
REGIMES = (1.0, 0.05)  # dense and sparse (paper Sec. 3.2)

PRESETS = {
    # Minutes on 2 CPU cores on the real CIFAR-10 subset (5,000 training images): a ResNet-18
    # teacher at width 16, CNN-5 at the paper's width. The sparse regime (5 % = 250 images) gets
    # more epochs so that its students take a comparable number of steps (our choice; the paper
    # trains both regimes for the same 50 epochs on 50,000 images).
    "small": {"epochs": 3, "sparse_epochs": 16, "teacher_epochs": 8, "batch_size": 64,
              "width": 16, "student_width": None, "train_limit": None, "steps_per_epoch": None},
    # The supplement: CNN-5 students 50 epochs, ResNet-18 students and teachers 100 epochs, Adam
    # 1e-3 with the poly multiplier. The paper gives no batch size; 128 is our choice.
    "paper": {"epochs": 50, "sparse_epochs": 50, "teacher_epochs": 100, "batch_size": 128,
              "width": 64, "student_width": None, "train_limit": None, "steps_per_epoch": None},
}
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


def fraction_type(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def add_distill_flags(parser):
    parser.add_argument("--train-teacher", choices=TEACHERS,
                        help="train a teacher of this architecture with CE and save it")
    parser.add_argument("--teacher", help="path of a saved teacher (.keras) to distil from")
    parser.add_argument("--student", default="cnn5", choices=STUDENTS)
    parser.add_argument("--student-width", type=flags.positive_int,
                        help="student first-layer channels (paper: 32 for cnn5, 64 for resnet18)")
    parser.add_argument("--fraction", type=fraction_type,
                        help="share of the training set: 1.0 dense, 0.05 sparse "
                             "(default: both with --method all, else 1.0)")
    parser.add_argument("--alpha", type=float, default=0.1, help="GREAT's alpha (paper: 0.1)")
    parser.add_argument("--distill-alpha", type=float,
                        help="Hinton alpha (default: the paper's 0.1 dense, 0.99 sparse)")
    parser.add_argument("--temperature", type=float, help="Hinton temperature (default: 20)")
    parser.add_argument("--sobolev-alpha", type=float, default=0.1, help="Sobolev alpha")
    parser.add_argument("--epochs-sparse", dest="sparse_epochs", type=flags.positive_int,
                        help="student epochs in the sparse regime (preset)")
    parser.add_argument("--teacher-epochs", type=flags.positive_int, help="teacher epochs (preset)")
    parser.add_argument("--image-size", type=int, default=64, choices=(64, 224),
                        help="mini-ImageNet resolution")
    return parser


def parse_args(argv=None):
    from great_tf.distill import METHODS

    parser = flags.base_parser(
        "python -m trainers.distill", "Knowledge distillation with GREAT (Algorithm 2), Table 3.",
        datasets=DATASETS, methods=METHODS, default_dataset="cifar10")
    args = flags.apply_preset(add_distill_flags(parser).parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "distill", args.dataset)
    return args


# -- data ------------------------------------------------------------------------------------------

class Data:
    """Training and test arrays plus the pipeline transforms of one data set."""

    def __init__(self, train, test, num_classes, augment, eval_transform=None):
        self.train, self.test = train, test
        self.num_classes = num_classes
        self.augment = augment
        self.eval_transform = eval_transform
        self.input_shape = tuple(train[0].shape[1:]) if eval_transform is None else None

    def train_dataset(self, arrays, args, epochs):
        """`make_train_dataset(initial_epoch)` for `flags.fit_resumable`."""
        from great_tf.data import train_dataset

        return lambda initial_epoch: train_dataset(arrays, args.batch_size, args.seed, epochs,
                                                   initial_epoch, self.augment)

    def test_dataset(self, batch_size):
        from great_tf.data import eval_dataset

        ds = eval_dataset(self.test, batch_size)
        return ds if self.eval_transform is None else ds.map(self.eval_transform)


def load_data(args):
    from great_tf.data import CLASSIFICATION, load_classification, take
    from great_tf.data.augment import augment_images

    print(f"loading {args.dataset}...", flush=True)
    if args.dataset == "tiny_imagenet":
        from great_tf.data.tiny_imagenet import load_tiny_imagenet, resize_center, resize_crop_flip

        if not args.data_dir:
            raise GreatError("--dataset tiny_imagenet needs --data-dir TINY_IMAGENET_ROOT")
        train = take(load_tiny_imagenet(args.data_dir, "train"), args.train_limit)
        test = load_tiny_imagenet(args.data_dir, "val")
        data = Data(train, test, int(max(train[1].max(), test[1].max())) + 1,
                    resize_crop_flip(args.image_size), resize_center(args.image_size))
        data.input_shape = (args.image_size, args.image_size, 3)
        return data
    train = load_classification(args.dataset, "train", args.data_dir, args.train_limit)
    test = load_classification(args.dataset, "test", args.data_dir)
    # The paper's CIFAR augmentation; no flips for digits.
    augment = augment_images(pad=4, flip=args.dataset == "cifar10")
    return Data(train, test, CLASSIFICATION[args.dataset][1], augment)


# -- networks --------------------------------------------------------------------------------------

def stem_for(input_shape):
    """The supplement's ResNet stems: 3x3 stride 1 at 32x32, stride 2 at 64x64, ImageNet's at 224."""
    size = input_shape[0]
    return "imagenet" if size >= 128 else "stride2" if size >= 64 else "cifar"


def build_network(arch, input_shape, num_classes, width):
    from great_tf import models

    stem = stem_for(input_shape)
    if arch == "cnn5":
        net = models.cnn5(input_shape, num_classes, width)
    elif arch == "resnext29":
        net = models.resnext29(input_shape, num_classes, width)
    else:
        depth = {"resnet18": 18, "resnet50": 50, "resnet152": 152}[arch]
        net = models.resnet(input_shape, num_classes, depth, width, stem, name=arch)
    return net


def build_discriminator(student_arch, input_shape, width):
    """CNN-5 students get the LeakyReLU CNN-5, ResNet students the ResNet-11 (supplement)."""
    from great_tf import models

    if student_arch == "cnn5":
        disc = models.cnn5_discriminator(input_shape, width)
    else:
        strides = 1 if stem_for(input_shape) == "cifar" else 2
        disc = models.resnet11_discriminator(input_shape, width, strides)
    return disc


def student_width(args):
    return args.student_width or (PAPER_WIDTH["cnn5"] if args.student == "cnn5" else args.width)


# -- training --------------------------------------------------------------------------------------

def accuracy(model, data, args):
    return 100.0 * float(model.evaluate(data.test_dataset(args.batch_size), return_dict=True,
                                        verbose=0)["accuracy"])


def teacher_path(args):
    return os.path.join(args.logdir, f"teacher_{args.train_teacher}", "teacher.keras")


def train_teacher(args, data):
    """Trains `--train-teacher` with CE on the whole training set and saves it; returns its path."""
    import keras

    from great_tf import distill

    run_dir = os.path.dirname(teacher_path(args))
    flags.prepare_run_dir(run_dir, args, {"teacher": args.train_teacher,
                                          "teacher_epochs": args.teacher_epochs})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None and os.path.exists(teacher_path(args)):
        print(f"teacher finished earlier: {teacher_path(args)} ({done['test accuracy']:.2f} %)")
        return teacher_path(args)
    keras.utils.set_random_seed(args.seed)
    net = None
    steps = flags.epoch_steps(len(data.train[1]), args)

    def build():
        nonlocal net
        net = build_network(args.train_teacher, data.input_shape, data.num_classes, args.width)
        return distill.compile_distiller(distill.CrossEntropyStudent(net, name="teacher"), steps,
                                         args.teacher_epochs)

    model = flags.build_in_scope(args, build)
    print(f"[teacher {args.train_teacher}] {args.teacher_epochs} epochs of {steps} steps, batch "
          f"{args.batch_size}, width {args.width}; logs in {run_dir}", flush=True)
    seconds, _ = flags.fit_resumable(model, run_dir, args, data.train_dataset(data.train, args, args.teacher_epochs),
                                     data.test_dataset(args.batch_size), args.teacher_epochs, steps)
    net.save(teacher_path(args))
    result = {"teacher": args.train_teacher, "test accuracy": accuracy(model, data, args),
              "train s": round(seconds, 1), "path": teacher_path(args)}
    flags.save_result(run_dir, result)
    print(f"[teacher {args.train_teacher}] test accuracy {result['test accuracy']:.2f} %, saved to "
          f"{teacher_path(args)}\nnext: python -m trainers.distill --teacher {teacher_path(args)} "
          f"--dataset {args.dataset} --method all")
    return teacher_path(args)


def regime_name(fraction):
    return f"{100 * fraction:g}pct"


def hyperparameters(method, fraction, args):
    """The method's alpha (and T): flags, else the paper's values for the regime."""
    if method == "great":
        return {"alpha": args.alpha}
    if method == "sobolev":
        return {"alpha": args.sobolev_alpha}
    if method == "distill":
        alpha, temperature = PAPER_DISTILL.get(fraction, PAPER_DISTILL[1.0])
        return {"alpha": alpha if args.distill_alpha is None else args.distill_alpha,
                "temperature": temperature if args.temperature is None else args.temperature}
    return {}


def train_student(method, fraction, args, data, teacher):
    """Trains one method in one regime (resuming if asked) and returns its result."""
    import keras

    from great_tf import distill
    from great_tf.data import stratified_subset, take
    from great_tf.summaries import DistillationSummaries

    run_dir = os.path.join(args.logdir, f"{args.student}_{regime_name(fraction)}", method)
    params = hyperparameters(method, fraction, args)
    epochs = args.epochs if fraction == 1.0 else args.sparse_epochs
    flags.prepare_run_dir(run_dir, args, {"method": method, "fraction": fraction, "student":
                                          args.student, "student_width": student_width(args),
                                          "teacher": os.path.abspath(args.teacher),
                                          "epochs_run": epochs, **params})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None:
        print(f"[{method} {regime_name(fraction)}] finished earlier, result kept: {run_dir}")
        return done

    train = stratified_subset(data.train, data.train[1], fraction, args.seed)
    keras.utils.set_random_seed(args.seed)  # every method starts from the same student
    student = None
    steps = flags.epoch_steps(len(train[1]), args)

    def build():
        nonlocal student
        student = build_network(args.student, data.input_shape, data.num_classes, student_width(args))
        disc = None
        if method == "great":
            disc = build_discriminator(args.student, data.input_shape, student_width(args))
        model = distill.build_distiller(method, student, teacher, disc, **params)
        return distill.compile_distiller(model, steps, epochs)

    model = flags.build_in_scope(args, build)
    print(f"[{method} {regime_name(fraction)}] {len(train[1])} images, {epochs} epochs of {steps} "
          f"steps, batch {args.batch_size}, {params or 'CE only'}; logs in {run_dir}", flush=True)
    probe = take(data.test, 32)
    if data.eval_transform is not None:
        probe = tuple(t.numpy() for t in data.eval_transform(*probe))
    seconds, epochs_now = flags.fit_resumable(
        model, run_dir, args, data.train_dataset(train, args, epochs), data.test_dataset(args.batch_size),
        epochs, steps, [DistillationSummaries(run_dir, probe=probe)])
    student.save(os.path.join(run_dir, "student.keras"))
    images = epochs_now * steps * args.batch_size
    result = {"method": method, "fraction": fraction, "test accuracy": accuracy(model, data, args),
              "train s": round(seconds, 1), "images/s": round(images / seconds, 1) if images else None,
              **params}
    flags.save_result(run_dir, result)
    print(f"[{method} {regime_name(fraction)}] test accuracy {result['test accuracy']:.2f} %")
    return result


def write_table3(results, args, teacher_name, teacher_accuracy):
    """Table 3's layout: one row per method, one accuracy column per regime, paper beside ours."""
    from great_tf.distill import METHOD_NAMES
    from great_tf.reporting import write_table

    fractions = sorted({r["fraction"] for r in results}, reverse=True)
    paper = PAPER_TABLE3.get((args.student, teacher_name), {})
    columns = ["method"] + [f"{regime_name(f).replace('pct', ' %')}" for f in fractions]
    columns += [f"paper {c}" for c in columns[1:] if paper] + [f"train s ({regime_name(f)})" for f in fractions]
    rows = []
    for method in dict.fromkeys(r["method"] for r in results):
        row = {"method": METHOD_NAMES[method]}
        for r in (r for r in results if r["method"] == method):
            label = regime_name(r["fraction"]).replace("pct", " %")
            row[label] = r["test accuracy"]
            row[f"train s ({regime_name(r['fraction'])})"] = r["train s"]
            if method in paper and r["fraction"] in REGIMES:
                row[f"paper {label}"] = paper[method][REGIMES.index(r["fraction"])]
        rows.append(row)
    settings = "; ".join(
        f"{METHOD_NAMES[r['method']]} {regime_name(r['fraction'])}: "
        + ", ".join(f"{k} {r[k]:g}" for k in ("alpha", "temperature") if k in r)
        for r in results if r["method"] != "baseline")
    notes = [
        f"Test accuracy (%) of the {args.student} student (width {student_width(args)}) on the "
        f"{args.dataset} test split; teacher {teacher_name} {args.teacher} with "
        f"{teacher_accuracy:.2f} % test accuracy.",
        f"Preset {args.preset}: {args.epochs} epochs dense, {args.sparse_epochs} sparse, batch "
        f"{args.batch_size}, Adam 1e-3 with the poly multiplier, seed {args.seed}; the sparse "
        f"regime is a stratified {min(REGIMES):g} of the training set (seeded).",
        f"Hyperparameters: {settings}.",
        "Paper columns: Table 3 (50,000 training images, 50 epochs, full-width networks); "
        "Sobolev's numbers are from the supplement." if paper else "",
    ]
    stem = os.path.join(args.logdir, f"table3_{args.student}_{teacher_name}")
    text = write_table(rows, columns, stem, title=f"Knowledge distillation: {args.student} (S) + "
                       f"{teacher_name} (T), {args.dataset}", notes=[n for n in notes if n],
                       formats={c: ".2f" for c in columns[1:]})
    print("\n" + text + f"\n\n(written to {stem}.md, .csv and .json)")
    return text


def main(argv=None):
    from great_tf import distill

    args = parse_args(argv)
    flags.setup_runtime(args)
    data = load_data(args)
    if args.train_teacher:
        return train_teacher(args, data)
    with args.distribution.scope():
        teacher = distill.load_teacher(args.teacher, data.num_classes, data.input_shape)
    methods = distill.METHODS if args.method == "all" else (args.method,)
    fractions = (args.fraction,) if args.fraction else REGIMES if args.method == "all" else (1.0,)
    teacher_score = teacher_accuracy(teacher, data, args)
    print(f"teacher {teacher.name} ({args.teacher}): test accuracy {teacher_score:.2f} %")
    results = [train_student(m, f, args, data, teacher) for f in fractions for m in methods]
    write_table3(results, args, teacher.name, teacher_score)
    return results


def teacher_accuracy(teacher, data, args):
    from great_tf.distill import CrossEntropyStudent

    with args.distribution.scope():
        model = CrossEntropyStudent(teacher, name="teacher_eval")
        model.compile()
    return accuracy(model, data, args)


if __name__ == "__main__":
    flags.run_cli(main)
