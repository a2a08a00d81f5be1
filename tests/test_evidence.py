"""The evidence campaign (great_tf.evidence) and its report (great_tf.evidence_report): stage
order and selection, state across runs, tables from result files, and the claim verdicts."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from great_tf import claims, cpu_steal, evidence, evidence_report as report
from great_tf.errors import GreatError
from trainers import defense as defense_trainer
from trainers import distill as distill_trainer
from trainers import mtl as mtl_trainer
from tuning import defense as tuning_defense
from tuning import distill as tuning_distill


def write_result(folder, result):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


def write_scalars(folder, tag, values, first=0):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        for step, value in enumerate(values, start=first):
            tf.summary.scalar(tag, value, step=step)
    writer.close()


def test_stages_run_seed_major_and_parse_as_their_trainers(tmp_path):
    stages = evidence.stages(str(tmp_path), seeds=2)
    names = [s.name for s in stages]
    # Every stage of seed 0 before any of seed 1; the shared teacher before the first students.
    last_seed0 = max(i for i, n in enumerate(names) if "seed0" in n or n == "distill-teacher")
    first_seed1 = min(i for i, n in enumerate(names) if "seed1" in n)
    assert last_seed0 < first_seed1
    assert names.index("distill-teacher") < names.index("distill/seed0")
    assert names.count("distill-teacher") == 1
    # Training stages come before the re-attacks of the models they save.
    assert names.index("defense-mnist/seed0") < names.index("defense-mnist/seed0/great+ce/eps0.3")
    assert names[-3:] == ["sweep-defense/mnist", "sweep-distill/dense", "sweep-distill/sparse"]
    parsers = {"trainers.defense": defense_trainer.parse_args, "trainers.mtl": mtl_trainer.parse_args,
               "trainers.distill": distill_trainer.parse_args, "tuning.distill": tuning_distill.parse_args,
               "tuning.defense": tuning_defense.parse_args}
    for stage in stages:
        args = parsers[stage.module](list(stage.argv))  # every command is one its trainer accepts
        assert args.preset == "medium"
        assert getattr(args, "resume", False) or getattr(args, "evaluate", None) or stage.module.startswith("tuning.")


def test_medium_presets_differ_by_data_set():
    mnist = defense_trainer.parse_args(["--dataset", "mnist", "--preset", "medium"])
    cifar = defense_trainer.parse_args(["--dataset", "cifar10", "--preset", "medium"])
    assert (mnist.epochs, mnist.width, mnist.batch_size) != (cifar.epochs, cifar.width, cifar.batch_size)
    assert defense_trainer.parse_args(["--dataset", "mnist", "--preset", "medium", "--epochs", "7"]).epochs == 7


def test_medium_preset_is_refused_where_it_means_nothing(capsys):
    from trainers import flags

    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(mtl_trainer.main, ["--dataset", "nyu_depth_v2", "--preset", "medium"])
    assert exit_info.value.code == 2
    assert "--preset medium is not defined" in capsys.readouterr().err


def test_select_stages_by_pattern(tmp_path):
    stages = evidence.stages(str(tmp_path), seeds=3)
    chosen = evidence.select_stages(stages, ["defense-mnist/seed1"])
    assert [s.name for s in chosen] == ["defense-mnist/seed1"]
    assert all(s.name.endswith("eps0.3") for s in evidence.select_stages(stages, ["*/eps0.3"]))
    with pytest.raises(GreatError, match="matches no stage"):
        evidence.select_stages(stages, ["nothing*"])


def test_run_stages_records_state_and_skips_what_is_done(tmp_path, capsys):
    root = str(tmp_path)
    ok = evidence.Stage("ok/seed0", "platform", ())          # `python -m platform` exits 0
    bad = evidence.Stage("bad/seed0", "great_tf_no_such_module", ())
    evidence.run_stages(root, [ok, bad])
    state = evidence.read_state(root)
    assert state["ok/seed0"]["status"] == "done"
    assert state["bad/seed0"]["status"].startswith("failed (exit 1)")
    assert os.path.exists(state["ok/seed0"]["log"]) and state["ok/seed0"]["command"] == ok.shell()
    first = state["ok/seed0"]["seconds"]
    capsys.readouterr()
    evidence.run_stages(root, [ok, bad])
    out = capsys.readouterr().out
    assert "ok/seed0: done, skipped" in out and "bad/seed0: failed (exit 1), skipped" in out
    assert evidence.read_state(root)["ok/seed0"]["seconds"] == first
    evidence.run_stages(root, [bad], rerun_failed=True)
    with open(evidence.log_path(root, bad), encoding="utf-8") as f:
        assert f.read().count("$ ") == 2  # the log keeps both attempts


def test_the_list_estimates_the_time_left_from_finished_stages_of_the_same_kind(tmp_path, capsys):
    root = str(tmp_path)
    for name, entry in {"mtl/seed0": {"status": "done", "seconds": 3600},
                        "mtl/seed1": {"status": "done", "seconds": 1800},
                        "mtl/seed2": {"status": "interrupted", "seconds": 600}}.items():
        evidence.record(root, name, entry)
    selected = [evidence.Stage(f"mtl/seed{k}", "trainers.mtl", ()) for k in range(4)]
    selected.append(evidence.Stage("sweep-x", "tuning.x", ()))
    # mtl takes 45 min a seed: seed 2 has 35 left, seed 3 all 45; the sweep has no estimate.
    evidence.print_stages(root, selected)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == ("2 of 5 stages done, 1.7 h spent; about 1.3 h left from the times of finished "
                    "stages of the same kind, plus 1 stage(s) of a kind not finished yet (sweep-x)")
    assert evidence.stage_kind("defense-mnist/seed12/great/eps0.3") == "defense-mnist/seed*/great/eps0.3"


def test_the_list_shows_the_last_log_line_of_a_stage_that_started_and_did_not_finish(tmp_path, capsys):
    """Keras' progress bars end their lines with carriage returns: the last bar is what counts."""
    root = str(tmp_path)
    sweep, done = evidence.Stage("sweep-x", "tuning.x", ()), evidence.Stage("mtl/seed0", "trainers.mtl", ())
    evidence.record(root, "sweep-x", {"status": "interrupted", "seconds": 60})
    evidence.record(root, "mtl/seed0", {"status": "done", "seconds": 60})
    for stage, text in ((sweep, "$ cmd\ntrial 1 of 5: alpha 0.1: val 60.00\n 1/9 [==\r 9/9 [====] " + "x" * 200 + "\n\n"),
                        (done, "$ cmd\nall done\n")):
        os.makedirs(os.path.dirname(evidence.log_path(root, stage)), exist_ok=True)
        with open(evidence.log_path(root, stage), "w", encoding="utf-8") as f:
            f.write(text)
    evidence.print_stages(root, [sweep, done])
    shown = [line.strip() for line in capsys.readouterr().out.splitlines() if "last:" in line]
    assert shown == ["last: 9/9 [====] " + "x" * (120 - len("9/9 [====] ") - 3) + "..."]  # none for a finished stage


def test_a_running_stage_records_its_time_as_it_goes(tmp_path, monkeypatch):
    """A hard kill (no chance to record the end) loses at most one heartbeat of a stage's time."""
    import threading

    monkeypatch.setattr(evidence, "HEARTBEAT_SECONDS", 0.1)
    root = str(tmp_path)
    slow = evidence.Stage("slow/seed0", "timeit", ("-n", "1", "-r", "1", "import time; time.sleep(1.5)"))
    runner = threading.Thread(target=evidence.run_stages, args=(root, [slow]))
    runner.start()
    seen = {}
    while runner.is_alive() and not seen.get("seconds"):
        time.sleep(0.05)
        seen = evidence.read_state(root).get("slow/seed0", {})
    runner.join()
    assert seen["status"] == "running" and seen["pid"] == os.getpid() and 0 < seen["seconds"] < 1.5
    assert evidence.read_state(root)["slow/seed0"]["seconds"] >= 1.5


def test_a_stage_left_running_by_a_dead_campaign_reads_as_interrupted_and_runs_again(tmp_path, capsys):
    root = str(tmp_path)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    evidence.record(root, "ok/seed0", {"status": "running", "pid": finished.pid, "seconds": 7.0,
                                       "cpu_jiffies": 1000, "steal_jiffies": 10})
    evidence.record(root, "busy/seed0", {"status": "running", "pid": os.getpid()})
    assert evidence.stage_status(evidence.read_state(root)["ok/seed0"]) == "interrupted"
    ok = evidence.Stage("ok/seed0", "platform", ())
    busy = evidence.Stage("busy/seed0", "platform", ())
    evidence.run_stages(root, [ok, busy])
    state = evidence.read_state(root)
    assert state["ok/seed0"]["status"] == "done" and state["ok/seed0"]["seconds"] > 7.0
    # The CPU counters add up over the attempts like the time (where the machine has them).
    if cpu_steal.read_cpu_times() is not None:
        assert state["ok/seed0"]["cpu_jiffies"] > 1000 and state["ok/seed0"]["steal_jiffies"] >= 10
    else:
        assert state["ok/seed0"]["cpu_jiffies"] == 1000 and state["ok/seed0"]["steal_jiffies"] == 10
    assert state["busy/seed0"]["status"] == "running"  # another live campaign process owns it
    assert f"busy/seed0: running in process {os.getpid()}, skipped" in capsys.readouterr().out


def test_a_stage_records_the_processor_time_its_processes_used_not_its_wall_clock(tmp_path):
    root = str(tmp_path)
    spin = evidence.Stage("spin/seed0", "timeit", ("-n", "1", "-r", "1", "-s", "import time",
                                                   "while time.process_time() < 0.6: pass"))
    sleep = evidence.Stage("sleep/seed0", "timeit", ("-n", "1", "-r", "1", "-s", "import time", "time.sleep(1.0)"))
    # An earlier attempt of the spinning stage used 100 s; this one's time is added to it.
    evidence.record(root, "spin/seed0", {"status": "interrupted", "seconds": 200.0, "cpu_seconds": 100.0})
    evidence.run_stages(root, [spin, sleep])
    state = evidence.read_state(root)
    assert state["spin/seed0"]["cpu_seconds"] >= 100.6
    assert state["sleep/seed0"]["seconds"] >= 1.0 and state["sleep/seed0"]["cpu_seconds"] < 0.5
    table = "\n".join(report.timing_section(root))
    assert "| stage | state | minutes | CPU stolen | CPU minutes | command |" in table
    assert f"| {state['spin/seed0']['cpu_seconds'] / 60:.1f} | `" in table


def test_report_from_result_files(tmp_path):
    root, seeds = str(tmp_path / "runs"), 2
    for seed in range(seeds):
        base = evidence.defense_dir(root, "cifar10", seed)
        for mode, acc in (("baseline", 2.0), ("great+ce", 40.0)):
            write_result(os.path.join(base, mode), {
                "method": mode, "No attack": 60.0 + seed, "iFGSM": acc + seed, "AA": acc / 2 + seed,
                "findings": [{"check": "zero-gradients", "flagged": mode == "great+ce"}],
                # Evaluated before the single-step check existed: the report applies it to the
                # stored FGSM curve (the baseline's FGSM step lifts it above its clean 60 %).
                "curves": {"iFGSM": [[0.0, 0.1], [60.0, acc]],
                           "FGSM": [[0.0, 0.1], [60.0, 75.0 if mode == "baseline" else 50.0]]}})
            write_result(os.path.join(base, mode, "evaluation", "eps8of255"),
                         {"method": mode, "No attack": 60.0, "AA": acc / 4 + seed})
        folder = evidence.distill_dir(root, seed)
        for method, acc in (("baseline", 40.0), ("great", 41.0)):
            write_result(os.path.join(folder, "cnn5_5pct", method),
                         {"method": method, "fraction": 0.05, "test accuracy": acc + seed / 10})
    found = report.defense_rows(root, "cifar10", seeds)
    assert sorted(found) == ["eps0.1", "eps8of255"] and len(found["eps0.1"]) == 4
    text = report.write_report(root, seeds, str(tmp_path / "docs" / "results"))
    assert "## Claims" in text.split("## Adversarial defense")[0]
    assert "eps = 8/255" in text and "great+ce: zero-gradients (seeds 0, 1)" in text
    assert "baseline: single-step-above-clean (seeds 0, 1)" in text
    assert "great+ce: zero-gradients (seeds 0, 1)." in text  # its FGSM stays below clean
    # iFGSM 40.5 ± 0.7 against 2.5 ± 0.7: the AA claim holds; the MTL claims have no run yet.
    aa = next(line for line in text.splitlines() if "than the baseline under AutoAttack" in line
              and "[cifar10]" in line)
    assert "**holds**" in aa
    # These runs were evaluated before FAB-T joined AA: their "AA" is named for what ran.
    assert "under AutoAttack without FAB-T (APGD-CE, APGD-T, Square) [cifar10]" in aa
    assert all(r["AA w/o FAB-T"] is not None and "AA" not in r for r in found["eps0.1"])
    sparse = next(line for line in text.splitlines() if "CE baseline in the sparse" in line)
    assert "**holds**" in sparse and "great 41.05 ± 0.07 (n=2)" in sparse
    assert "cannot be decided yet" in text
    table = text.split("## Claims")[1].split("\n## ")[0]
    assert table.count("**cannot be decided here**") == 4  # SVHN, ResNeXt-29, mini-ImageNet, NYUv2
    tally = table.strip().splitlines()[0]
    assert tally.endswith(", cannot be decided here 4.") and f"holds {table.count('**holds**')}," in tally
    saved = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert len(saved["distill"]) == 4
    assert (tmp_path / "docs" / "figures" / "defense_cifar10_accuracy_vs_eps.png").exists()


def test_the_page_says_whether_it_is_drawn_from_the_whole_campaign_or_part_of_it(tmp_path):
    root = str(tmp_path)
    planned = evidence.stages(root, 2)
    for stage in planned[:-1]:
        evidence.record(root, stage.name, {"status": "done", "seconds": 60})
    evidence.record(root, planned[-1].name, {"status": "failed", "seconds": 60})
    partial = report.campaign_extent(root, 2)
    assert partial == (f"from the runs finished so far ({len(planned) - 1} of {len(planned)} stages "
                       "done; seeds 0..1 planned)")
    evidence.record(root, planned[-1].name, {"status": "done"})
    assert report.campaign_extent(root, 2) == f"from all {len(planned)} stages of the campaign (seeds 0..1), every one finished"
    # Planned with a third seed, the same finished stages are only part of a larger campaign.
    assert report.campaign_extent(root, 3).startswith(f"from the runs finished so far ({len(planned)} of ")


def test_training_curves_average_the_seeds_over_their_common_epochs(tmp_path):
    runs = []
    for seed, values in enumerate(([0.1, 0.2, 0.3], [0.3, 0.4], [0.9])):
        run = tmp_path / f"seed{seed}" / "great+ce"
        write_scalars(str(run / "validation"), "epoch_accuracy", values)
        if seed < 2:  # seed 2 is still training: no result yet
            write_result(str(run), {"method": "great+ce"})
        runs.append(str(run))
    epochs, mean = report.epoch_series(runs, "validation/epoch_accuracy", scale=100.0)
    assert epochs == [1, 2]
    np.testing.assert_allclose(mean, [20.0, 30.0], rtol=1e-6)
    assert report.epoch_series([str(tmp_path / "nothing")], "validation/epoch_accuracy") is None
    panels = report.curve_panels({"GRE(AT+CE)": runs, "none": []},
                                 [("test", "validation/epoch_accuracy", 1.0), ("absent", "train/x", 1.0)])
    # The line averages two of its three runs (seed 2 has not finished) and says so.
    assert list(panels) == ["test"] and list(panels["test"]) == ["GRE(AT+CE) (2 of 3)"]
    # A tag logged before training as well (GAL statistics: step 0 is the initial value).
    assert report.epoch_series(runs, "validation/epoch_accuracy", first=0)[0] == [0, 1]


def test_distillation_figures_show_accuracy_gradients_and_the_discriminator(tmp_path):
    root = str(tmp_path / "runs")
    for seed in range(2):
        for method in ("baseline", "great"):
            run = os.path.join(evidence.distill_dir(root, seed), "cnn5_100pct", method)
            write_result(run, {"method": method, "fraction": 1.0, "test accuracy": 50.0})
            write_scalars(os.path.join(run, "validation"), "epoch_accuracy", [0.3, 0.5])
            write_scalars(os.path.join(run, "great"), "input_gradient_cosine/student_teacher", [0.0, 0.1, 0.2])
            if method == "great":
                write_scalars(os.path.join(run, "great"), "discriminator_accuracy/student", [0.5, 1.0, 1.0])
    figures = str(tmp_path / "docs" / "figures")
    paths = report.distill_figures(root, 2, figures)
    assert [os.path.basename(p) for p in paths] == ["distill_training.png", "distill_gradients.png",
                                                    "distill_discriminator.png"]
    assert all(os.path.getsize(p) > 0 for p in paths)
    # Without any finished run no figure is drawn (and no empty one); one drawn before is kept.
    assert report.distill_figures(str(tmp_path / "none"), 2, str(tmp_path / "new")) == [None, None, None]
    assert report.distill_figures(str(tmp_path / "none"), 2, figures) == paths
    text = report.write_report(root, 2, str(tmp_path / "docs" / "results"))
    assert "![distill_discriminator.png](figures/distill_discriminator.png)" in text


def test_a_dozen_methods_get_distinct_line_styles_and_one_legend(tmp_path):
    from great_tf.reporting import line_styles, plot_panels

    methods = [f"method{i}" for i in range(13)]
    styles = line_styles(methods)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 13
    assert len({s["color"] for s in styles.values()}) == 13  # no colour used twice
    panels = {p: {m: ([1, 2], [i, i + 1]) for i, m in enumerate(methods)} for p in ("a", "b")}
    path = plot_panels(panels, str(tmp_path / "curves.png"), "t", "epoch", "")
    assert os.path.getsize(path) > 0


def test_a_campaign_started_from_a_background_script_still_stops_cleanly_on_signals():
    """A background job of a shell script starts with SIGINT ignored, and its trainers would
    inherit that: the campaign must stop on SIGINT or SIGTERM all the same, and hand its trainers
    a SIGINT they act on."""
    script = "\n".join([
        "import os, signal, subprocess, sys, time",
        "signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a script does",
        "from trainers.evidence import stop_cleanly_on_signals",
        "stop_cleanly_on_signals()",
        "child = [sys.executable, '-c', 'import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)']",
        "print('child ignores SIGINT:', subprocess.check_output(child, text=True).strip())",
        "for sig in (signal.SIGINT, signal.SIGTERM):",
        "    try:",
        "        os.kill(os.getpid(), sig)",
        "        time.sleep(5)",
        "    except KeyboardInterrupt:",
        "        print('stopped by', sig.name)",
    ])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                         timeout=60).stdout
    assert out.split("\n")[:3] == ["child ignores SIGINT: False", "stopped by SIGINT", "stopped by SIGTERM"]


# -- the campaign guards its own state --------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sleeping_stage(name, code, seconds=60):
    """A fake stage (no TensorFlow): `code`, then a sleep of `seconds`, as `python -m timeit`
    (its statements may span lines)."""
    return evidence.Stage(name, "timeit", ("-n", "1", "-r", "1", f"{code}\nimport time\ntime.sleep({seconds})"))


def wait_until(condition, seconds=30.0):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    return condition()


def running(pid):
    """Whether `pid` is a live process (a dead one that nobody has reaped yet is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_second_campaign_on_a_root_is_refused_and_a_killed_ones_lock_taken_over(tmp_path, capsys):
    import socket

    from great_tf import runs
    from trainers import evidence as evidence_cli

    root = str(tmp_path / "root")
    hold = f"from great_tf import evidence; evidence.lock_root({root!r}); print('locked', flush=True); input()"
    owner = subprocess.Popen([sys.executable, "-c", hold], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        with pytest.raises(GreatError, match=f"writing to {os.path.realpath(root)} \\(pid {owner.pid} on host "
                           f"{socket.gethostname()}.*choose another root"):
            evidence_cli.main(["--root", root, "--only", "mtl/seed0"])
        assert "mtl/seed0" not in evidence.read_state(root)  # refused before anything ran
        evidence_cli.main(["--root", root, "--list", "--only", "mtl/seed0"])  # reading needs no lock
        owner.kill()
        owner.wait()
        capsys.readouterr()
        evidence.lock_root(root)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no longer running" in err[0] and f"(pid {owner.pid} on host" in err[0]
    finally:
        owner.kill()
        runs.release_run_folders()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_campaign_takes_its_trainer_with_it_and_a_rerun_finishes_the_stage(tmp_path):
    from great_tf import runs

    root, folder, marker = str(tmp_path / "root"), str(tmp_path / "run"), str(tmp_path / "first_attempt")
    # The first attempt locks its run folder, as a trainer does, and trains on; the second ends at once.
    stage = sleeping_stage("train/seed0", "\n".join([
        "import os", "from great_tf.runs import lock_run_folder", f"lock_run_folder({folder!r})",
        f"first = not os.path.exists({marker!r})", f"open({marker!r}, 'a').write(str(os.getpid()))",
        "if not first:", "    os._exit(0)"]))
    campaign = subprocess.Popen([sys.executable, "-c", f"from great_tf import evidence; "
                                 f"evidence.run_stages({root!r}, [evidence.{stage!r}])"], cwd=REPO)
    trainer = None
    try:
        assert wait_until(lambda: os.path.exists(marker) and os.path.getsize(marker) > 0)
        trainer = int(open(marker).read())
        campaign.kill()
        campaign.wait()
        assert wait_until(lambda: not running(trainer), 10.0), "the trainer outlived its campaign"
        evidence.run_stages(root, [stage])
        assert evidence.read_state(root)["train/seed0"]["status"] == "done"
    finally:
        campaign.kill()
        if trainer and running(trainer):
            os.kill(trainer, 9)
        runs.release_run_folders()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="a trainer is told from a reused pid by /proc")
def test_a_rerun_skips_a_stage_whose_orphaned_trainer_still_holds_its_run_folder(tmp_path, monkeypatch, capsys):
    """A campaign from before the parent-death signal, killed, left its trainer training: the rerun
    must neither start a second trainer on the folder nor record the stage as failed."""
    from great_tf import runs

    monkeypatch.setattr(evidence, "TRAINER_EXIT_SECONDS", 0.5)
    root, folder, orphaned = str(tmp_path / "root"), str(tmp_path / "run"), str(tmp_path / "orphaned")
    stage = sleeping_stage("train/seed0", "\n".join([
        "import os", "from great_tf.runs import lock_run_folder", f"lock_run_folder({folder!r})",
        "print('locked', flush=True)", f"if not os.path.exists({orphaned!r}):", "    os._exit(0)"]))
    open(orphaned, "w").close()
    orphan = subprocess.Popen(stage.command(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline().strip() == "locked"
        os.makedirs(root)
        evidence.record(root, stage.name, {"status": "running", "pid": None, "child": orphan.pid})
        evidence.run_stages(root, [stage])
        assert (f"train/seed0: the trainer a killed campaign started for it (process {orphan.pid}) still runs: "
                f"stop it (kill {orphan.pid}), then run again; skipped") in capsys.readouterr().out
        assert evidence.stage_status(evidence.read_state(root)[stage.name]) == "interrupted"
        orphan.kill()
        orphan.wait()
        os.remove(orphaned)
        evidence.run_stages(root, [stage])
        assert evidence.read_state(root)[stage.name]["status"] == "done"
    finally:
        orphan.kill()
        runs.release_run_folders()


def test_a_reattack_waits_for_the_training_stage_that_saves_its_model(tmp_path, capsys):
    from great_tf import runs

    root = str(tmp_path)
    stages = {s.name: s for s in evidence.stages(root, 1)}
    reattack = stages["defense-mnist/seed0/great/eps0.3"]
    folder = evidence.defense_dir(root, "mnist", 0)
    assert reattack.waits_for == "defense-mnist/seed0"
    assert set(reattack.reads) == {os.path.join(folder, m, "model.keras") for m in ("great", "baseline")}
    full = {s.name: s for s in evidence.stages(root, 1, "full", str(tmp_path))}  # the full-set campaign too
    assert full["defense-cifar10/seed0/great/eps8of255"].waits_for == "defense-cifar10/seed0"
    try:
        # Its training stage has not run: the re-attack is not run, and not failed either.
        evidence.run_stages(root, [reattack])
        assert (f"defense-mnist/seed0/great/eps0.3: waits for defense-mnist/seed0 "
                f"({os.path.join(folder, 'baseline', 'model.keras')} is not there yet), skipped") in capsys.readouterr().out
        assert "defense-mnist/seed0/great/eps0.3" not in evidence.read_state(root)
        # Once the models are there, it runs (here a fake stage with the same inputs).
        fake = evidence.Stage("reattack", "platform", (), reads=reattack.reads, waits_for=reattack.waits_for)
        for path in fake.reads:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
        evidence.run_stages(root, [fake])
        assert evidence.read_state(root)["reattack"]["status"] == "done"
    finally:
        runs.release_run_folders()


def test_the_campaign_exits_non_zero_naming_the_stages_that_failed(tmp_path, monkeypatch, capsys):
    from trainers import evidence as evidence_cli
    from trainers import flags

    root = str(tmp_path)
    ok, bad = evidence.Stage("ok/seed0", "platform", ()), evidence.Stage("bad/seed0", "great_tf_no_such_module", ())
    waiting = evidence.Stage("later", "platform", (), reads=(str(tmp_path / "nothing"),), waits_for="ok/seed0")
    chosen = []
    monkeypatch.setattr(evidence, "stages", lambda *args: chosen)
    chosen[:] = [ok]
    assert [s.name for s in evidence_cli.main(["--root", root])] == ["ok/seed0"]  # all done: exit 0
    chosen[:] = [ok, bad, waiting]
    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(evidence_cli.main, ["--root", root])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: 1 of 3 stages failed (bad/seed0); 1 more not done: see their logs in {root}/logs, then run "
        "again with --rerun-failed"]
    chosen[:] = [ok, waiting]  # nothing failed, but not everything is done
    with pytest.raises(GreatError, match=r"1 of 2 stages are not done \(later\)"):
        evidence_cli.main(["--root", root])


def test_an_interrupted_campaign_names_the_command_that_continues_it(tmp_path):
    root = str(tmp_path / "root")
    argv = ["--root", root, "--only", "slow/seed0"]
    # `python -m trainers.evidence ARGV` with a fake stage in place of the campaign's (no TensorFlow).
    script = "\n".join([
        "import runpy, sys", "from great_tf import evidence",
        f"evidence.stages = lambda *args: [evidence.{sleeping_stage('slow/seed0', 'pass')!r}]",
        f"sys.argv = ['trainers/evidence.py', *{argv!r}]", "runpy.run_module('trainers.evidence', run_name='__main__')"])
    campaign = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: evidence.read_state(root).get("slow/seed0", {}).get("child"), 60.0)
        campaign.send_signal(2)  # SIGINT, as Ctrl-C
        err = campaign.communicate(timeout=60)[1].strip().splitlines()
    finally:
        campaign.kill()
    assert campaign.returncode == 130
    assert err == [f"interrupted: run `python -m trainers.evidence --root {root} --only slow/seed0` again to "
                   "continue (finished stages are kept, the interrupted one resumes from its last finished epoch)"]
    assert evidence.read_state(root)["slow/seed0"]["status"] == "interrupted"


def corrupt(path, text="{"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def a_finished_run(root):
    write_result(os.path.join(evidence.defense_dir(root, "mnist", 0), "great"), {"method": "great", "AA": 1.0})


BAD_PATHS = {
    "corrupt campaign.json": lambda t: (["--list"], corrupt(str(t / "root" / "campaign.json"))),
    "campaign.json not an object": lambda t: (["--list"], corrupt(str(t / "root" / "campaign.json"), "[1]")),
    "corrupt result.json": lambda t: (["--report", str(t / "docs" / "results")],
                                      corrupt(os.path.join(evidence.defense_dir(str(t / "root"), "mnist", 0),
                                                           "baseline", "result.json"))),
    "corrupt archived result": lambda t: (["--list", "--archive", str(t / "archive")],
                                          corrupt(str(t / "archive" / "distill" / "seed0" / "result.json"))),
    "corrupt archived campaign.json": lambda t: (["--list", "--archive", str(t / "archive")],
                                                 corrupt(str(t / "archive" / "campaign.json"))),
    "root is a file": lambda t: ([], corrupt(str(t / "root"), "")),
    "root under a file": lambda t: (["--root", str(t / "file" / "root")], corrupt(str(t / "file"), "")),
    "report under a file": lambda t: (["--report", str(t / "file" / "results")], corrupt(str(t / "file"), "")),
    "archive is a file": lambda t: (["--archive", str(t / "archive")], corrupt(str(t / "archive"), "")),
}


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_a_corrupt_or_unusable_path_ends_in_one_line(tmp_path, case, capsys):
    from trainers import evidence as evidence_cli
    from trainers import flags

    if "report" in case or "result.json" in case:  # the report refuses a root where nothing finished
        a_finished_run(str(tmp_path / "root"))
    flags_given, bad = BAD_PATHS[case](tmp_path)
    argv = ["--root", str(tmp_path / "root"), "--only", "mtl/seed0", *flags_given]
    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(evidence_cli.main, argv)
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert bad in err[0] or os.path.dirname(bad) in err[0], err[0]


def test_a_report_of_a_root_where_nothing_finished_is_refused_and_leaves_the_page_alone(tmp_path):
    stem = tmp_path / "docs" / "results"
    stem.parent.mkdir()
    (tmp_path / "docs" / "results.md").write_text("the real results\n")
    empty = str(tmp_path / "mistyped")
    (tmp_path / "started").mkdir()
    evidence.record(str(tmp_path / "started"), "mtl/seed0", {"status": "interrupted"})
    for root in (empty, str(tmp_path / "started")):
        with pytest.raises(GreatError, match=f"no stage of the campaign in {root} has finished"):
            report.write_report(root, 3, str(stem))
    assert (tmp_path / "docs" / "results.md").read_text() == "the real results\n"
    assert not (tmp_path / "docs" / "results.json").exists()


# -- the claims the sweeps decide ----------------------------------------------------------------

def write_distill_sweep(root, regime, scores):
    """A distillation sweep's trial table as tuning.distill writes it; `scores` is
    {(method, hyperparameters as a tuple of pairs): validation %}."""
    from great_tf.reporting import write_table

    rows = [{"method": m, "trial": n, **dict(hp), "val %": v, "test %": v}
            for n, ((m, hp), v) in enumerate(scores.items(), start=1)]
    write_table(rows, ["method", "trial", "alpha", "temperature", "val %", "test %"],
                os.path.join(evidence.sweep_dir(root), f"sweep_cnn5_{regime}_trials"))


def distill_seed_rows(std):
    """Three seeds per method and regime whose sample std is `std`."""
    return [{"method": m, "regime": r, "seed": k, "test accuracy": 50.0 + std * (k - 1)}
            for m in ("great", "distill") for r in ("100pct", "5pct") for k in range(3)]


def transfer_claim(root, rows):
    from great_tf.sweep_report import distill_transfer_claim

    return distill_transfer_claim(root, rows)


def test_the_distillation_sweeps_figure_has_a_line_per_temperature_and_method(tmp_path):
    from great_tf.sweep_report import sweep_figure, sweep_lines, sweep_trials

    root, figures = str(tmp_path), str(tmp_path / "figures")
    assert sweep_figure(root, figures) is None
    write_distill_sweep(root, "5pct", {("great", (("alpha", 0.5),)): 39.0, ("great", (("alpha", 0.1),)): 40.0,
                                       ("distill", (("alpha", 0.99), ("temperature", 20.0))): 45.0,
                                       ("distill", (("alpha", 0.1), ("temperature", 20.0))): 41.0,
                                       ("distill", (("alpha", 0.1), ("temperature", 2.0))): 42.0})
    assert sweep_lines(sweep_trials(root, "5pct")) == {
        "GREAT": ([0.1, 0.5], [40.0, 39.0]), "Hinton T 20": ([0.1, 0.99], [41.0, 45.0]),
        "Hinton T 2": ([0.1], [42.0])}
    assert os.path.getsize(sweep_figure(root, figures)) > 0


def test_the_report_names_the_regime_of_each_distillation_sweep_table(tmp_path):
    from great_tf.reporting import write_table
    from great_tf.sweep_report import sweep_section

    root = str(tmp_path)
    assert sweep_section(root) == ["No sweep has finished yet.", ""]
    for regime in ("100pct", "5pct"):
        stem = os.path.join(evidence.sweep_dir(root), f"sweep_cnn5_{regime}")
        write_table([{"method": "GREAT"}], ["method"], stem, title="Hyperparameter sweeps (keras-tuner)")
        write_table([{"trial": 1}], ["trial"], stem + "_trials", title="Every trial")
    headings = [line for line in sweep_section(root) for line in line.split("\n") if line.startswith("#")]
    assert headings == ["### Hyperparameter sweeps (keras-tuner): dense (100 %)", "### Every trial: dense (100 %)",
                        "### Hyperparameter sweeps (keras-tuner): sparse (5 %)", "### Every trial: sparse (5 %)"]


def test_the_transfer_claim_compares_each_settings_cost_in_the_other_regime_with_seed_noise(tmp_path):
    root = str(tmp_path)
    a = lambda v: (("alpha", v),)  # noqa: E731
    at = lambda v, t: (("alpha", v), ("temperature", t))  # noqa: E731
    rows = distill_seed_rows(std=1.0)  # noise: 2 std = 2 points
    assert transfer_claim(root, rows)[3] == claims.UNDECIDED
    # GREAT: alpha 0.1 best in both regimes. Hinton: (0.1, 20) best dense, (0.99, 20) best sparse;
    # carrying each to the other regime costs 70 - 60 and 45 - 40: 7.5 points on average.
    write_distill_sweep(root, "100pct", {("great", a(0.1)): 70.0, ("great", a(0.5)): 65.0,
                                         ("distill", at(0.1, 20)): 70.0, ("distill", at(0.99, 20)): 60.0})
    assert transfer_claim(root, rows)[3] == claims.UNDECIDED  # the sparse sweep has not run
    write_distill_sweep(root, "5pct", {("great", a(0.1)): 40.0, ("great", a(0.5)): 39.0,
                                       ("distill", at(0.1, 20)): 40.0, ("distill", at(0.99, 20)): 45.0})
    _, _, measured, result = transfer_claim(root, rows)
    assert result == claims.HOLDS
    assert "transfer cost 0.00 points against a noise of 2.00" in measured
    assert "transfer cost 7.50 points" in measured and "alpha 0.99, temperature 20 (sparse)" in measured
    # Noisier seeds (2 std = 10 points) swallow Hinton's cost: its setting carries over as well.
    assert transfer_claim(root, distill_seed_rows(std=5.0))[3] == claims.FAILS
    # GREAT's best alpha moves and costs 3 points each way: it does not carry over either.
    write_distill_sweep(root, "5pct", {("great", a(0.1)): 36.0, ("great", a(0.5)): 39.0,
                                       ("distill", at(0.1, 20)): 40.0, ("distill", at(0.99, 20)): 45.0})
    write_distill_sweep(root, "100pct", {("great", a(0.1)): 70.0, ("great", a(0.5)): 67.0,
                                         ("distill", at(0.1, 20)): 70.0, ("distill", at(0.99, 20)): 60.0})
    _, _, measured, result = transfer_claim(root, rows)
    assert result == claims.FAILS and "GREAT: best alpha 0.1 (dense), alpha 0.5 (sparse); transfer cost 3.00" in measured


def test_the_robust_setting_claim_weighs_the_best_feasible_trial_against_the_attacks_noise(tmp_path):
    from great_tf.reporting import write_table
    from great_tf.sweep_report import robust_setting_claim

    root = str(tmp_path)
    folder = evidence.defense_sweep_dir(root, "mnist")

    def sweep(*trials):
        rows = tuning_defense.trial_rows([(n, {"alpha_max": 1.0, "beta_max": b}, {
            "val_clean": clean, "val_aa": aa, "objective": aa}) for n, (b, clean, aa) in enumerate(trials, 1)],
            limit=97.0)
        write_table(rows, tuning_defense.COLUMNS, os.path.join(folder, "sweep_great+ce"))
        return robust_setting_claim(root, "mnist")

    assert sweep((2.0, 98.0, 10.0))[3] == claims.UNDECIDED  # no baseline yet
    write_result(os.path.join(folder, "baseline"), {"val clean %": 99.0, "val AA %": 10.0, "attacked images": 400})
    # Binomial noise of AA 20 % against 10 % on 400 images: 2 * 100 * sqrt((.16 + .09) / 400) = 5.
    _, _, measured, result = sweep((2.0, 98.0, 20.0), (10.0, 90.0, 60.0))
    assert result == claims.HOLDS and "beta_max 2, AA 20.00 % vs baseline 10.00 %; gain +10.00" in measured
    assert "2 std errors (400 images) 5.00" in measured and "best of 1 feasible (of 2)" in measured
    assert sweep((2.0, 98.0, 13.0))[3] == claims.SPREAD
    assert sweep((10.0, 90.0, 60.0))[3] == claims.FAILS  # robust, but 9 clean points below
    # Best feasible and baseline both at 0 % under AA: no noise to be within, and not more robust.
    write_result(os.path.join(folder, "baseline"), {"val clean %": 99.0, "val AA %": 0.0, "attacked images": 400})
    assert sweep((0.5, 98.0, 0.0))[3] == claims.FAILS
    assert sweep((0.5, 98.0, 0.5))[3] == claims.SPREAD  # 2 images of 400: gain 0.5 < 2 std errors 0.71
