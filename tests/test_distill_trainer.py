"""`python -m trainers.distill` end to end at tiny width on the real CIFAR-10 data."""

import json
import os

import pytest

from great_tf.summaries import read_events
from trainers import distill as trainer
from trainers import flags

pytestmark = pytest.mark.skipif(
    not os.path.isdir(os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))),
    reason="needs the CIFAR-10 TFDS folder (TFDS_DATA_DIR)")

TINY = ["--dataset", "cifar10", "--train-limit", "400", "--batch-size", "8", "--width", "2",
        "--steps-per-epoch", "2", "--verbose", "0"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("distill"))
    path = trainer.main(["--train-teacher", "resnet18", "--teacher-epochs", "1", "--logdir", logdir, *TINY])
    return logdir, path


def test_teacher_is_saved_and_loadable(teacher):
    logdir, path = teacher
    assert path == os.path.join(logdir, "teacher_resnet18", "teacher.keras") and os.path.exists(path)
    from great_tf.distill import load_teacher

    model = load_teacher(path, num_classes=10, input_shape=(32, 32, 3))
    assert not model.trainable_variables


def test_all_methods_both_regimes_write_table3_and_summaries(teacher):
    logdir, path = teacher
    argv = ["--teacher", path, "--student", "cnn5", "--student-width", "2", "--method", "all",
            "--epochs", "1", "--epochs-sparse", "1", "--logdir", logdir, *TINY]
    results = trainer.main(argv)
    assert sorted((r["method"], r["fraction"]) for r in results) == sorted(
        (m, f) for m in ("baseline", "distill", "sobolev", "great") for f in (1.0, 0.05))
    with open(os.path.join(logdir, "table3_cnn5_resnet18.json"), encoding="utf-8") as f:
        table = json.load(f)
    assert [r["method"] for r in table["rows"]] == ["Baseline", "Distillation", "Sobolev", "GREAT"]
    assert {"100 %", "5 %", "paper 100 %", "paper 5 %"} <= set(table["columns"])
    assert table["rows"][3]["paper 5 %"] == 66.55
    # The paper's per-regime distillation settings are used by default.
    by_key = {(r["method"], r["fraction"]): r for r in results}
    assert (by_key[("distill", 0.05)]["alpha"], by_key[("distill", 0.05)]["temperature"]) == (0.99, 20.0)
    assert by_key[("great", 0.05)]["alpha"] == 0.1
    # TensorBoard: GREAT's discriminator accuracies and both gradients' histograms.
    events = read_events(os.path.join(logdir, "cnn5_100pct", "great"))
    tags = {tag.split("/", 1)[1] for tag in events}
    assert {"discriminator_accuracy/teacher", "discriminator_accuracy/student",
            "input_gradient/teacher", "input_gradient/student"} <= tags
    assert any(tag.endswith("disc_loss") for tag in tags)  # Keras' epoch scalars
    # --resume keeps finished results instead of retraining.
    again = trainer.main(argv + ["--resume", "--method", "great", "--fraction", "0.05"])
    assert again[0]["test accuracy"] == by_key[("great", 0.05)]["test accuracy"]


def test_missing_teacher_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(trainer.main, ["--teacher", str(tmp_path / "nope.keras"), "--logdir",
                                     str(tmp_path), *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: teacher") and "--train-teacher" in err[0]


def table3_notes(tmp_path, **changes):
    import argparse

    from great_tf.distill.runs import write_table3

    values = dict(student="cnn5", student_width=None, width=16, eval_limit=None, dataset="cifar10",
                  teacher="teacher.keras", preset="small", epochs=3, sparse_epochs=16, batch_size=64,
                  seed=0, train_limit=None, steps_per_epoch=None, logdir=str(tmp_path))
    results = [{"method": "baseline", "fraction": 1.0, "test accuracy": 50.0, "train s": 1.0},
               {"method": "great", "fraction": 1.0, "test accuracy": 51.0, "train s": 2.0, "alpha": 0.1}]
    return write_table3(results, argparse.Namespace(**{**values, **changes}), "resnet18", 60.0)


def test_the_table_notes_state_the_train_limit_and_the_step_cap_when_set(tmp_path):
    text = table3_notes(tmp_path, train_limit=40, steps_per_epoch=2)
    assert "3 epochs dense, 16 sparse, each epoch capped at 2 steps, batch 64" in text
    assert "stratified 0.05 of the first 40 images of the training split (train limit)" in text
    plain = table3_notes(tmp_path)
    assert "capped" not in plain and "train limit" not in plain
    assert "3 epochs dense, 16 sparse, batch 64" in plain and "0.05 of the training set" in plain
