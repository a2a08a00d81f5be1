"""Running the distillation experiment (Table 3) from a settled run configuration: the teacher,
each student, the table. `trainers.distill` parses the flags and calls these
(docs/design.md#distillation); `args` is the trainer's parsed namespace.
"""

import os

from great_tf import runs


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
    runs.prepare_run_dir(run_dir, args, {"teacher": args.train_teacher,
                                          "teacher_epochs": args.teacher_epochs})
    done = runs.load_result(run_dir) if args.resume else None
    if done is not None and os.path.exists(path):
        print(f"teacher finished earlier: {path} ({done['test accuracy']:.2f} %)")
        return path
    keras.utils.set_random_seed(args.seed)
    steps = runs.epoch_steps(len(data.train[1]), args)
    net = {}

    def build():
        net["teacher"] = build_network(args.train_teacher, data.input_shape, data.num_classes, args.width)
        return distill.compile_distiller(distill.CrossEntropyStudent(student=net["teacher"], name="teacher"),
                                         steps, args.teacher_epochs)

    model = runs.build_in_scope(args, build)
    print(f"[teacher {args.train_teacher}] {args.teacher_epochs} epochs of {steps} steps, batch "
          f"{args.batch_size}, width {args.width}; logs in {run_dir}", flush=True)
    seconds, _ = runs.fit_resumable(
        model, run_dir, args, data.train, data.test_dataset(args.batch_size), args.teacher_epochs, steps,
        augment=data.augment)
    net["teacher"].save(path)
    result = {"teacher": args.train_teacher, "test accuracy": accuracy(model, data, args),
              "train s": round(seconds, 1), "path": path}
    runs.save_result(run_dir, result)
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
    runs.prepare_run_dir(run_dir, args, {"method": method, "fraction": fraction, "student":
                                          args.student, "student_width": student_width(args),
                                          "teacher": os.path.abspath(args.teacher),
                                          "epochs_run": epochs, **params})
    done = runs.load_result(run_dir) if args.resume else None
    if done is not None:
        print(f"{name} finished earlier, result kept: {run_dir}")
        return done

    train = stratified_subset(data.train, data.train[1], fraction, args.seed)
    keras.utils.set_random_seed(args.seed)  # every method starts from the same student
    steps = runs.epoch_steps(len(train[1]), args)
    built = {}

    def build():
        built["model"], built["student"] = build_student_model(
            method, args.student, data, teacher, student_width(args), steps, epochs, **params)
        return built["model"]

    model = runs.build_in_scope(args, build)
    print(f"{name} {len(train[1])} images, {epochs} epochs of {steps} steps, batch "
          f"{args.batch_size}, {params or 'CE only'}; logs in {run_dir}", flush=True)
    seconds, epochs_now = runs.fit_resumable(
        model, run_dir, args, train, data.test_dataset(args.batch_size), epochs, steps,
        [DistillationSummaries(run_dir, probe=data.probe())], augment=data.augment)
    built["student"].save(os.path.join(run_dir, "student.keras"))
    images = epochs_now * steps * args.batch_size
    result = {"method": method, "fraction": fraction, "test accuracy": accuracy(model, data, args),
              "train s": round(seconds, 1), "images/s": round(images / seconds, 1) if images else None,
              **params}
    runs.save_result(run_dir, result)
    print(f"{name} test accuracy {result['test accuracy']:.2f} %")
    return result


def step_cap_note(args):
    """', each epoch capped at N steps' when --steps-per-epoch caps them (else nothing)."""
    return f", each epoch capped at {args.steps_per_epoch} steps" if args.steps_per_epoch else ""


def training_set_note(args):
    """The training set the students saw: the whole split, or its first --train-limit images."""
    if args.train_limit:
        return f"first {args.train_limit} images of the training split (train limit)"
    return "training set"


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
        f"Preset {args.preset}: {args.epochs} epochs dense, {args.sparse_epochs} sparse"
        f"{step_cap_note(args)}, batch {args.batch_size}, Adam 1e-3 with the poly multiplier, seed "
        f"{args.seed}; the sparse regime is a stratified {min(REGIMES):g} of the "
        f"{training_set_note(args)} (seeded).",
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
        model = CrossEntropyStudent(student=teacher, name="teacher_eval")
        model.compile()
    return accuracy(model, data, args)
