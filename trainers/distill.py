"""Knowledge distillation with GREAT next to CE, Hinton distillation and Sobolev training
(paper Algorithm 2, Table 3).

    python -m trainers.distill --train-teacher resnet18 --dataset cifar10     # 1. the teacher
    python -m trainers.distill --teacher runs/distill/cifar10/teacher_resnet18/teacher.keras \\
        --student cnn5 --method all                                           # 2. Table 3
    python -m trainers.distill --teacher PATH --method great --fraction 0.05  # one method, sparse

`--method all` trains every method in the dense (100 %) and the sparse (5 %) regime and writes
Table 3's layout; `--fraction` restricts it to one regime. `--dataset` takes any prepared TFDS
image-classification set (cifar10, mnist, svhn_cropped, fashion_mnist, cifar100, ...); mini-ImageNet:
`--dataset tiny_imagenet --data-dir TINY_IMAGENET_ROOT [--image-size 224]`.
"""

import os

from trainers import flags

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


def add_distill_flags(parser):
    from great_tf.distill.experiment import STUDENTS, TEACHERS

    parser.add_argument("--train-teacher", choices=TEACHERS,
                        help="train a teacher of this architecture with CE and save it")
    parser.add_argument("--teacher", help="path of a saved teacher (.keras) to distil from")
    parser.add_argument("--student", default="cnn5", choices=STUDENTS)
    parser.add_argument("--student-width", type=flags.positive_int,
                        help="student first-layer channels (paper: 32 for cnn5, 64 for resnet18)")
    parser.add_argument("--fraction", type=flags.fraction_type,
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
        datasets=None, methods=METHODS, default_dataset="cifar10")
    args = flags.apply_preset(add_distill_flags(parser).parse_args(argv), PRESETS)
    args.logdir = args.logdir or os.path.join("runs", "distill", args.dataset)
    return args


def load_data(args):
    from great_tf.distill.experiment import load_distill_data

    print(f"loading {args.dataset}...", flush=True)
    return load_distill_data(args.dataset, args.data_dir, args.train_limit, args.eval_limit,
                             args.image_size)


def student_width(args):
    from great_tf.distill.experiment import student_width as width

    return width(args.student, args.student_width, args.width)


def accuracy(model, data, args):
    return 100.0 * float(model.evaluate(data.test_dataset(args.batch_size), return_dict=True,
                                        verbose=0)["accuracy"])


def teacher_path(args):
    return os.path.join(args.logdir, f"teacher_{args.train_teacher}", "teacher.keras")


def train_teacher(args, data):
    """Trains `--train-teacher` with CE on the whole training set and saves it; returns its path."""
    import keras

    from great_tf import distill
    from great_tf.distill.experiment import build_network

    path = teacher_path(args)
    run_dir = os.path.dirname(path)
    flags.prepare_run_dir(run_dir, args, {"teacher": args.train_teacher,
                                          "teacher_epochs": args.teacher_epochs})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None and os.path.exists(path):
        print(f"teacher finished earlier: {path} ({done['test accuracy']:.2f} %)")
        return path
    keras.utils.set_random_seed(args.seed)
    steps = flags.epoch_steps(len(data.train[1]), args)
    net = {}

    def build():
        net["teacher"] = build_network(args.train_teacher, data.input_shape, data.num_classes, args.width)
        return distill.compile_distiller(distill.CrossEntropyStudent(net["teacher"], name="teacher"),
                                         steps, args.teacher_epochs)

    model = flags.build_in_scope(args, build)
    print(f"[teacher {args.train_teacher}] {args.teacher_epochs} epochs of {steps} steps, batch "
          f"{args.batch_size}, width {args.width}; logs in {run_dir}", flush=True)
    seconds, _ = flags.fit_resumable(
        model, run_dir, args, data.train, data.test_dataset(args.batch_size), args.teacher_epochs, steps,
        augment=data.augment)
    net["teacher"].save(path)
    result = {"teacher": args.train_teacher, "test accuracy": accuracy(model, data, args),
              "train s": round(seconds, 1), "path": path}
    flags.save_result(run_dir, result)
    print(f"[teacher {args.train_teacher}] test accuracy {result['test accuracy']:.2f} %, saved to "
          f"{path}\nnext: python -m trainers.distill --teacher {path} --dataset {args.dataset} --method all")
    return path


def train_student(method, fraction, args, data, teacher):
    """Trains one method in one regime (resuming if asked) and returns its result."""
    import keras

    from great_tf.data import stratified_subset
    from great_tf.distill.experiment import build_student_model, method_hyperparameters, regime_name
    from great_tf.summaries import DistillationSummaries

    name = f"[{method} {regime_name(fraction)}]"
    run_dir = os.path.join(args.logdir, f"{args.student}_{regime_name(fraction)}", method)
    params = method_hyperparameters(method, fraction, args.alpha, args.sobolev_alpha,
                                    args.distill_alpha, args.temperature)
    epochs = args.epochs if fraction == 1.0 else args.sparse_epochs
    flags.prepare_run_dir(run_dir, args, {"method": method, "fraction": fraction, "student":
                                          args.student, "student_width": student_width(args),
                                          "teacher": os.path.abspath(args.teacher),
                                          "epochs_run": epochs, **params})
    done = flags.load_result(run_dir) if args.resume else None
    if done is not None:
        print(f"{name} finished earlier, result kept: {run_dir}")
        return done

    train = stratified_subset(data.train, data.train[1], fraction, args.seed)
    keras.utils.set_random_seed(args.seed)  # every method starts from the same student
    steps = flags.epoch_steps(len(train[1]), args)
    built = {}

    def build():
        built["model"], built["student"] = build_student_model(
            method, args.student, data, teacher, student_width(args), steps, epochs, **params)
        return built["model"]

    model = flags.build_in_scope(args, build)
    print(f"{name} {len(train[1])} images, {epochs} epochs of {steps} steps, batch "
          f"{args.batch_size}, {params or 'CE only'}; logs in {run_dir}", flush=True)
    seconds, epochs_now = flags.fit_resumable(
        model, run_dir, args, train, data.test_dataset(args.batch_size), epochs, steps,
        [DistillationSummaries(run_dir, probe=data.probe())], augment=data.augment)
    built["student"].save(os.path.join(run_dir, "student.keras"))
    images = epochs_now * steps * args.batch_size
    result = {"method": method, "fraction": fraction, "test accuracy": accuracy(model, data, args),
              "train s": round(seconds, 1), "images/s": round(images / seconds, 1) if images else None,
              **params}
    flags.save_result(run_dir, result)
    print(f"{name} test accuracy {result['test accuracy']:.2f} %")
    return result


def write_table3(results, args, teacher_name, teacher_accuracy):
    from great_tf.distill import METHOD_NAMES
    from great_tf.distill.experiment import REGIMES, regime_name, table3_rows
    from great_tf.reporting import write_table

    rows, columns, has_paper = table3_rows(results, args.student, teacher_name)
    settings = "; ".join(
        f"{METHOD_NAMES.get(r['method'], r['method'])} {regime_name(r['fraction'])}: "
        + ", ".join(f"{k} {r[k]:g}" for k in ("alpha", "temperature") if k in r)
        for r in results if r["method"] != "baseline")
    test_set = f"the first {args.eval_limit} examples of the" if args.eval_limit else "the"
    notes = [
        f"Test accuracy (%) of the {args.student} student (width {student_width(args)}) on "
        f"{test_set} {args.dataset} test split; teacher {teacher_name} {args.teacher} with "
        f"{teacher_accuracy:.2f} % test accuracy.",
        f"Preset {args.preset}: {args.epochs} epochs dense, {args.sparse_epochs} sparse, batch "
        f"{args.batch_size}, Adam 1e-3 with the poly multiplier, seed {args.seed}; the sparse "
        f"regime is a stratified {min(REGIMES):g} of the training set (seeded).",
        f"Hyperparameters: {settings}.",
        "Paper columns: Table 3 (50,000 training images, 50 epochs, full-width networks); "
        "Sobolev's numbers are from the supplement." if has_paper else "",
    ]
    stem = os.path.join(args.logdir, f"table3_{args.student}_{teacher_name}")
    text = write_table(rows, columns, stem, title=f"Knowledge distillation: {args.student} (S) + "
                       f"{teacher_name} (T), {args.dataset}", notes=[n for n in notes if n],
                       formats={c: ".2f" for c in columns[1:]})
    print("\n" + text + f"\n\n(written to {stem}.md, .csv and .json)")
    return text


def teacher_accuracy(teacher, data, args):
    from great_tf.distill import CrossEntropyStudent

    with args.distribution.scope():
        model = CrossEntropyStudent(teacher, name="teacher_eval")
        model.compile()
    return accuracy(model, data, args)


def main(argv=None):
    from great_tf import distill
    from great_tf.distill.experiment import REGIMES

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


if __name__ == "__main__":
    flags.run_cli(main)
