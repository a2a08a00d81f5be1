"""The campaign's archive of small files (great_tf.evidence_archive): what a finished stage leaves
in the repository, and a campaign on a new machine that starts from it."""

import json
import os

import pytest

from great_tf import evidence, evidence_archive as archive, evidence_report as report
from trainers import evidence as evidence_cli


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_scalars(folder, tag, values):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        for step, value in enumerate(values):
            tf.summary.scalar(tag, value, step=step)
            tf.summary.histogram("gradients", [value, 2 * value], step=step)  # not a scalar
    writer.close()


def finished_run(root):
    """A defense run that finished (result, curves, a checkpoint) and one still training."""
    run = os.path.join(evidence.defense_dir(root, "mnist", 0), "great")
    write_json(os.path.join(run, "result.json"), {"method": "great", "AA": 3.5, "saliency": [[0.1] * 50] * 50})
    write_scalars(os.path.join(run, "validation"), "epoch_accuracy", [0.5, 0.75, 0.875])
    with open(os.path.join(run, "checkpoint.weights.h5"), "wb") as f:
        f.write(b"\0" * 1000)
    training = os.path.join(evidence.defense_dir(root, "mnist", 0), "greace")
    write_scalars(os.path.join(training, "validation"), "epoch_accuracy", [0.25])
    return run


def test_archive_keeps_results_and_curves_but_not_checkpoints_or_event_files(tmp_path):
    root, dest = str(tmp_path / "live"), str(tmp_path / "repo" / "runs" / "evidence")
    run = finished_run(root)
    evidence.record(root, "defense-mnist/seed0", {"status": "done", "seconds": 60.0, "log": f"{root}/logs/a.log",
                                                  "command": f"python -m trainers.defense --logdir {root}/defense"})
    archive.archive(root, dest)
    kept = archive.kept_files(dest)
    rel = os.path.relpath(run, root)
    assert kept == [os.path.join(rel, "result.json"), os.path.join(rel, "scalars.json")]
    assert not any(name.startswith("events.out") or name.endswith(".h5")
                   for _, _, files in os.walk(dest) for name in files)
    result = read_json(os.path.join(dest, rel, "result.json"))
    assert result == {"method": "great", "AA": 3.5}  # the saliency maps are left out
    # Only scalars, in step order, as the report reads them from the event files.
    curves = read_json(os.path.join(dest, rel, "scalars.json"))
    assert list(curves) == ["validation/epoch_accuracy"]
    assert curves["validation/epoch_accuracy"] == [[0, 0.5], [1, 0.75], [2, 0.875]]
    # The archived command names the archive's folder: what a person types in the repository.
    state = evidence.read_state(dest)
    assert state["defense-mnist/seed0"]["command"] == f"python -m trainers.defense --logdir {dest}/defense"
    assert state["defense-mnist/seed0"]["log"] == f"{dest}/logs/a.log" and state["defense-mnist/seed0"]["seconds"] == 60.0


def test_a_new_machine_restores_the_finished_stages_and_draws_their_curves(tmp_path, capsys):
    old, dest, new = str(tmp_path / "old"), str(tmp_path / "archive"), str(tmp_path / "new")
    run = finished_run(old)
    evidence.record(old, "defense-mnist/seed0", {"status": "done", "seconds": 60.0, "command": f"x {old}/a"})
    # The stage that was running when the machine went away, its process number now someone else's.
    evidence.record(old, "defense-mnist/seed1", {"status": "running", "pid": os.getpid(), "seconds": 5.0})
    archive.archive(old, dest)
    # The new machine's campaign has started a stage of its own before the restore.
    os.makedirs(new)
    evidence.record(new, "defense-cifar10/seed2", {"status": "running", "pid": os.getpid()})
    assert archive.restore(dest, new) == 2
    state = evidence.read_state(new)
    assert state["defense-mnist/seed0"]["status"] == "done" and state["defense-mnist/seed0"]["command"] == f"x {new}/a"
    assert evidence.stage_status(state["defense-mnist/seed1"]) == "interrupted"
    assert evidence.stage_status(state["defense-cifar10/seed2"]) == "running"  # its own entry wins
    moved = os.path.join(new, os.path.relpath(run, old))
    assert report.epoch_series([moved], "validation/epoch_accuracy") == report.epoch_series(
        [run], "validation/epoch_accuracy") == ([1, 2, 3], [0.5, 0.75, 0.875])
    # A second restore copies nothing and leaves the live state alone.
    evidence.record(new, "defense-mnist/seed0", {"seconds": 99.0})
    assert archive.restore(dest, new) == 0
    assert evidence.read_state(new)["defense-mnist/seed0"]["seconds"] == 99.0
    # The command line does the same: the restored stage reads as done in the list.
    capsys.readouterr()
    evidence_cli.main(["--root", str(tmp_path / "third"), "--archive", dest, "--list", "--only", "defense-mnist/seed0"])
    out = capsys.readouterr().out
    assert "file(s) of finished stages restored" in out and f"{'defense-mnist/seed0':24s} done (1.0 min)" in out


def test_a_figure_of_partial_runs_says_how_many_it_averages_and_an_undrawable_one_is_kept(tmp_path):
    root = str(tmp_path)
    runs = []
    for seed, values in enumerate(([0.5, 0.75], [0.25, 0.5], None)):
        run = os.path.join(evidence.defense_dir(root, "mnist", seed), "great")
        if values:
            write_json(os.path.join(run, "result.json"), {"method": "great"})
            write_json(os.path.join(run, archive.SCALARS), {"validation/epoch_accuracy": [[0, values[0]], [1, values[1]]]})
        runs.append(run)
    panels = report.curve_panels({"GREAT": runs}, [("accuracy", "validation/epoch_accuracy", 100.0)])
    assert panels == {"accuracy": {"GREAT (2 of 3)": ([1, 2], [37.5, 62.5])}}
    figures = str(tmp_path / "figures")
    assert report.figure_if_any({}, figures, "kept.png", "t", "x", "y") is None
    os.makedirs(figures)
    open(os.path.join(figures, "kept.png"), "wb").close()
    assert report.figure_if_any({}, figures, "kept.png", "t", "x", "y") == os.path.join(figures, "kept.png")


def test_a_stage_needing_a_missing_file_first_reruns_the_stage_that_makes_it(tmp_path, capsys):
    root = str(tmp_path)
    made = os.path.join(root, "teacher.keras")
    maker = evidence.Stage("teacher", "timeit", ("-n", "1", "-r", "1", f"open({made!r}, 'w').close()"),
                           makes=made)
    user = evidence.Stage("student/seed2", "timeit", ("-n", "1", "-r", "1", f"open({made!r}).close()"),
                          needs=made)
    evidence.record(root, "teacher", {"status": "done", "seconds": 600.0, "restored_from": "x"})  # another machine
    archived = []
    evidence.run_stages(root, [user], all_stages=[maker, user],
                        after_each=lambda: archived.append(dict(evidence.read_state(root))))
    state = evidence.read_state(root)
    assert state["student/seed2"]["status"] == "done" and os.path.exists(made)
    # Ran again: its record is the new run's alone (the lost run's time and origin are dropped).
    assert state["teacher"]["status"] == "done" and state["teacher"]["seconds"] < 600.0
    assert "restored_from" not in state["teacher"] and "was missing" in state["teacher"]["rerun"]
    # Archived as soon as it finished, before the stage that needed it ran.
    assert archived[0]["teacher"]["status"] == "done" and "student/seed2" not in archived[0]
    assert "student/seed2: needs" in capsys.readouterr().out
    # An interrupted rerun continues, and its time adds up over the runs.
    os.remove(made)
    evidence.record(root, "teacher", {"status": "interrupted", "seconds": 600.0})
    evidence.record(root, "student/seed2", {"status": "interrupted"})
    evidence.run_stages(root, [user], all_stages=[maker, user])
    assert evidence.read_state(root)["teacher"]["seconds"] > 600.0
    # With the file there, the maker is left alone.
    evidence.record(root, "student/seed2", {"status": "interrupted"})
    before = evidence.read_state(root)["teacher"]["seconds"]
    evidence.run_stages(root, [user], all_stages=[maker, user])
    assert evidence.read_state(root)["teacher"]["seconds"] == before


def test_the_campaign_archives_each_stage_as_it_finishes(tmp_path, monkeypatch):
    root, dest = str(tmp_path / "root"), str(tmp_path / "archive")
    result = os.path.join(root, "distill", "seed0", "cnn5_100pct", "great", "result.json")
    write = (f"import os, json; os.makedirs({os.path.dirname(result)!r}, exist_ok=True); "
             f"json.dump({{'method': 'great', 'test accuracy': 50.0}}, open({result!r}, 'w'))")
    archived = os.path.join(dest, os.path.relpath(result, root))
    stage = evidence.Stage("distill/seed0", "timeit", ("-n", "1", "-r", "1", write))
    # The next stage finds the first one's result in the archive already (a machine lost while it
    # runs loses only it).
    check = evidence.Stage("distill/seed1", "timeit", ("-n", "1", "-r", "1", f"assert open({archived!r})"))
    monkeypatch.setattr(evidence, "stages", lambda root, seeds, *campaign: [stage, check])
    evidence_cli.main(["--root", root, "--archive", dest])
    assert evidence.read_state(root)["distill/seed1"]["status"] == "done"
    assert read_json(archived) == {"method": "great", "test accuracy": 50.0}
    assert evidence.read_state(dest)["distill/seed0"]["status"] == "done"
    # The report from the archive alone has the row.
    assert report.distill_rows(dest, 1) == [{"method": "great", "test accuracy": 50.0, "regime": "100pct", "seed": 0}]


def test_a_sweep_restored_on_a_new_machine_runs_only_the_trials_it_had_not_finished(tmp_path):
    from test_tuning import MachineGone, grid_sweep

    old, dest, new = str(tmp_path / "old"), str(tmp_path / "archive"), str(tmp_path / "new")
    ran = []
    with pytest.raises(MachineGone):  # the machine goes away in the fourth trial of six
        grid_sweep(old, ran, stop_at=4).search(verbose=0)
    first = list(ran)
    archive.archive(old, dest)
    kept = sorted(os.path.basename(f) for f in archive.kept_files(dest))
    assert kept == ["oracle.json"] + ["trial.json"] * 4 + ["tuner0.json"]  # no checkpoint, no model
    archive.restore(dest, new)
    ran.clear()
    tuner = grid_sweep(new, ran)
    tuner.search(verbose=0)
    assert ran[0] == first[3] and len(ran) == 3  # the cut-off trial again, then the two never started
    assert len({tuple(t.hyperparameters.values.values()) for t in tuner.oracle.trials.values()}) == 6


def test_a_figure_whose_curves_are_lost_is_archived_and_a_report_from_the_archive_alone_has_it(tmp_path):
    """The students' curves were lost with a machine before scalars.json was kept: the figure drawn
    from them then survives only as drawn, and the archive must keep that too."""
    from great_tf import runs

    old, dest, new = str(tmp_path / "old"), str(tmp_path / "archive"), str(tmp_path / "new")
    student = os.path.join(evidence.distill_dir(old, 0), "cnn5_100pct", "great")
    write_json(os.path.join(student, "result.json"), {"method": "great", "test accuracy": 50.0})  # no curves
    evidence.record(old, "distill/seed0", {"status": "done", "seconds": 60.0})
    drawn = tmp_path / "docs" / "figures" / "distill_training.png"
    drawn.parent.mkdir(parents=True)
    drawn.write_bytes(b"\x89PNG drawn on the machine that is gone")
    report.write_report(old, 1, str(tmp_path / "docs" / "results"))
    archive.archive(old, dest)
    assert os.path.join("figures", "distill_training.png") in archive.kept_files(dest)
    try:
        evidence_cli.main(["--root", new, "--archive", dest, "--seeds", "1", "--report", str(tmp_path / "elsewhere" / "results")])
    finally:
        runs.release_run_folders()
    assert (tmp_path / "elsewhere" / "figures" / "distill_training.png").read_bytes() == drawn.read_bytes()
    assert "![distill_training.png](figures/distill_training.png)" in (tmp_path / "elsewhere" / "results.md").read_text()
