"""The evidence campaign of docs/results.md: which trainer commands it runs, in which order, and
their state (docs/design.md#evidence).

A stage is one trainer command at `--preset medium` with `--resume-if-present`, run in a process of
its own (a crash or an out-of-memory in one stage leaves the others alone, and every stage starts
from a clean TensorFlow). Stages run seed-major. `<root>/campaign.json` records, per stage, its
command, state (done / failed / stopped), wall-clock seconds, and the machine's CPU time over
those seconds with the part a shared host stole (`great_tf.cpu_steal`); the tables are built from
the runs' own `result.json` files by `great_tf.evidence_report`.

The campaign guards its state: one campaign process per root (`lock_root`: a second one is refused
in one line, a lock left by a killed one is taken over); a stage's trainer dies with the campaign,
even one killed by SIGKILL (Linux: `PR_SET_PDEATHSIG`), and a rerun waits for the trainer of a
killed campaign to end rather than fail on its run folder's lock; a stage whose input another
stage makes (a re-attack's saved model) waits for that stage instead of failing.
"""

import dataclasses
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time

from great_tf import cpu_steal, runs
from great_tf.errors import GreatError

SEEDS = 3
STATE_NAME = "campaign.json"
DEFENSE_DATASETS = ("cifar10", "mnist")
# The eps each data set is attacked at, as (flags, folder name); the first is the eps the
# training run itself attacks at (the data set's default), the others re-attack the saved models
# with --evaluate, strong attacks and masking findings included.
DEFENSE_EPS = {
    "cifar10": ((("--eps", "0.1"), "eps0.1"), (("--pixel-scale", "255", "--eps", "8"), "eps8of255")),
    "mnist": ((("--eps", "0.2"), "eps0.2"), (("--eps", "0.3"), "eps0.3"), (("--eps", "0.1"), "eps0.1")),
}
TEACHER = "resnet18"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str      # "<experiment>/seed<k>", or "<experiment>" for a stage shared by the seeds
    module: str    # the trainer, run as python -m <module>
    argv: tuple    # its flags
    makes: str = None  # a file later stages read (the teacher), which a new machine lacks
    needs: str = None  # such a file, made by another stage
    reads: tuple = ()  # files the stage `waits_for` writes (a re-attack's saved models)
    waits_for: str = None  # the stage that writes them; without them this stage waits for it

    def command(self):
        return [sys.executable, "-m", self.module, *self.argv]

    def shell(self):
        """The command as a person would type it."""
        return " ".join(["python", "-m", self.module, *self.argv])


# -- where things are --------------------------------------------------------------------------------

def defense_dir(root, dataset, seed):
    return os.path.join(root, "defense", dataset, f"seed{seed}")


def distill_dir(root, seed):
    return os.path.join(root, "distill", f"seed{seed}")


def saved_model(folder, mode):
    return os.path.join(folder, mode, "model.keras")


def teacher_dir(root):
    return os.path.join(root, "distill", "teacher")


def teacher_file(root):
    return os.path.join(teacher_dir(root), f"teacher_{TEACHER}", "teacher.keras")


def mtl_dir(root, seed):
    return os.path.join(root, "mtl", "cifar10_noisy", f"seed{seed}")


# -- the stages ------------------------------------------------------------------------------------

MEDIUM = ("--preset", "medium", "--resume-if-present", "--verbose", "2")


def defense_stages(root, dataset, seed, preset="medium", data=()):
    """Training (and attacking at the first eps) every defense mode, then re-attacking each saved
    model at the other eps; `data` are the flags that choose the data folder."""
    from great_tf.defense import MODES

    folder = defense_dir(root, dataset, seed)
    (first, _), *others = DEFENSE_EPS[dataset]
    stages = [Stage(f"defense-{dataset}/seed{seed}", "trainers.defense",
                    ("--dataset", dataset, *data, "--method", "all", "--seed", str(seed), *first,
                     "--logdir", folder, "--preset", preset, "--resume-if-present", "--verbose", "2"))]
    for eps_flags, name in others:
        # The model and the baseline's (the transfer attack's surrogate), both saved by training.
        stages += [Stage(f"defense-{dataset}/seed{seed}/{mode}/{name}", "trainers.defense",
                         ("--evaluate", os.path.join(folder, mode), "--dataset", dataset, *data,
                          "--seed", str(seed), *eps_flags, "--preset", preset, "--verbose", "2"),
                         reads=tuple(sorted({saved_model(folder, mode), saved_model(folder, "baseline")})),
                         waits_for=stages[0].name)
                   for mode in MODES]
    return stages


def seed_stages(root, seed):
    """The stages of one seed, in the order they run."""
    stages = [stage for d in DEFENSE_DATASETS for stage in defense_stages(root, d, seed)]
    if seed == 0:
        # One teacher for every seed: the seeds measure the students' spread, not the teacher's.
        stages.append(Stage("distill-teacher", "trainers.distill",
                            ("--dataset", "cifar10", "--train-teacher", TEACHER,
                             "--logdir", teacher_dir(root), *MEDIUM), makes=teacher_file(root)))
    stages.append(Stage(f"distill/seed{seed}", "trainers.distill",
                        ("--dataset", "cifar10", "--teacher", teacher_file(root), "--method", "all",
                         "--seed", str(seed), "--logdir", distill_dir(root, seed), *MEDIUM),
                        needs=teacher_file(root)))
    stages.append(Stage(f"mtl/seed{seed}", "trainers.mtl",
                        ("--dataset", "cifar10_noisy", "--method", "all", "--seed", str(seed),
                         "--logdir", mtl_dir(root, seed), *MEDIUM)))
    return stages


def sweep_dir(root):
    return os.path.join(root, "tuning", "distill")


def sweep_stages(root):
    """The keras-tuner sweeps, after every seed: GRE(AT+CE)'s alpha_max x beta_max on MNIST (AA
    accuracy within 2 clean points of the baseline), and Table 3's claim (GREAT's one alpha
    against Hinton's T x alpha), dense and sparse, with the campaign's teacher."""
    common = ("--search", "all", "--teacher", teacher_file(root), "--preset", "medium",
              "--logdir", sweep_dir(root))
    return [Stage("sweep-defense/mnist", "tuning.defense",
                  ("--dataset", "mnist", "--mode", "great+ce", "--preset", "medium",
                   "--logdir", defense_sweep_dir(root, "mnist"))),
            Stage("sweep-distill/dense", "tuning.distill", (*common, "--fraction", "1.0"),
                  needs=teacher_file(root)),
            Stage("sweep-distill/sparse", "tuning.distill", (*common, "--fraction", "0.05", "--epochs", "200"),
                  needs=teacher_file(root))]


def defense_sweep_dir(root, dataset):
    return os.path.join(root, "tuning", "defense", dataset)


def full_stages(root, seeds, data_dir):
    """The campaign on the complete CIFAR-10 in `data_dir` at `--preset large` (#29), in the order
    that decides most: the defense over two seeds before anything gets a third."""
    data = ("--data-dir", data_dir)
    first_two = [stage for seed in range(min(seeds, 2))
                 for stage in defense_stages(root, "cifar10", seed, "large", data)]
    return first_two + [stage for seed in range(2, seeds)
                        for stage in defense_stages(root, "cifar10", seed, "large", data)]


CAMPAIGNS = ("subset", "full")


def stages(root, seeds=SEEDS, campaign="subset", data_dir=None):
    """Every stage of the campaign with seeds 0 .. seeds-1: the subset campaign seed-major, then
    the sweeps; the full-set one as `full_stages` orders it."""
    if campaign == "full":
        if not data_dir:
            raise GreatError("the full campaign needs the folder of the complete CIFAR-10: pass "
                             "--data-dir (e.g. ../shared/tensorflow_datasets_full)")
        return full_stages(root, seeds, os.path.abspath(data_dir))
    if campaign != "subset":
        raise GreatError(f"unknown campaign {campaign!r}: choose one of {', '.join(CAMPAIGNS)}")
    return [stage for seed in range(seeds) for stage in seed_stages(root, seed)] + sweep_stages(root)


def select_stages(all_stages, patterns=None):
    """The stages whose name matches one of the shell `patterns` (all of them without patterns);
    a one-line error for a pattern that matches nothing."""
    if not patterns:
        return list(all_stages)
    for pattern in patterns:
        if not any(fnmatch.fnmatch(s.name, pattern) for s in all_stages):
            raise GreatError(f"--only {pattern!r} matches no stage: see --list for their names")
    return [s for s in all_stages if any(fnmatch.fnmatch(s.name, p) for p in patterns)]


# -- state -----------------------------------------------------------------------------------------

def read_state(root):
    """{stage name: entry} of `root`'s campaign.json ({} before the first stage); a one-line
    `GreatError` if it is unreadable."""
    path = os.path.join(root, STATE_NAME)
    state = runs.read_json(path, fix="repair it, or move it away to start the record afresh (finished "
                           "runs are kept by --resume-if-present, so their stages end quickly)")
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise GreatError(f"{path} is not a campaign's record (a JSON object of stages): repair it or move it away")
    return state


def lock_root(root):
    """Makes this process the campaign's one process on `root` (created if needed): another live
    one is refused in one line naming its pid and host; a lock left by a killed one is taken over
    with a line saying so (`great_tf.runs.lock_run_folder`). Released when the process ends."""
    runs.lock_run_folder(root, argument="root")


def record(root, name, entry, replace=False):
    """Updates one stage's entry of campaign.json, or with `replace` starts it anew (written whole
    to a temporary file, then renamed, so an interruption never leaves half a file)."""
    state = read_state(root)
    state[name] = entry if replace else {**state.get(name, {}), **entry}
    path = os.path.join(root, STATE_NAME)
    with open(path + ".tmp", "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def stage_status(entry):
    """A stage's status; "running" only while the process that runs it is alive (a campaign killed
    without a chance to record its end, e.g. by SIGKILL or a shutdown, reads as "interrupted")."""
    status = entry.get("status", "to do")
    if status == "running" and not runs.process_alive(entry.get("pid")):
        return "interrupted"
    return status


def print_stages(root, selected):
    """Each stage's status, time and command; for one that has started and not finished, the last
    line of its log (a sweep's last finished trial, a trainer's last epoch); then the time left."""
    state = read_state(root)
    for stage in selected:
        entry = state.get(stage.name, {})
        seconds = entry.get("seconds")
        took = f" ({seconds / 60:.1f} min)" if seconds else ""
        status = stage_status(entry)
        print(f"{stage.name:24s} {status}{took}\n    {stage.shell()}")
        if status in ("running", "interrupted") and (line := last_log_line(log_path(root, stage))):
            print(f"    last: {line}")
    print(progress_line(state, selected))
    return selected


def last_log_line(path, width=120):
    """The last non-blank line of a log (read from its end: logs grow long), cut to `width`
    characters; "" if there is none."""
    if not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 4096, 0))
        lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").replace("\r", "\n").split("\n")]
    line = next((ln for ln in reversed(lines) if ln), "")
    return line if len(line) <= width else line[:width - 3] + "..."


def stage_kind(name):
    """The stage's name with its seed left out: the seeds of one experiment take about as long."""
    return re.sub(r"/seed\d+", "/seed*", name)


def minutes_left(state, selected):
    """(estimated minutes left, names of unfinished stages with no finished stage of their kind):
    each unfinished stage takes the mean time of the finished stages of its kind, less what it
    has already spent."""
    done = {}
    for name, entry in state.items():
        if entry.get("status") == "done" and entry.get("seconds"):
            done.setdefault(stage_kind(name), []).append(entry["seconds"] / 60)
    left, unknown = 0.0, []
    for stage in selected:
        entry = state.get(stage.name, {})
        if entry.get("status") == "done":
            continue
        times = done.get(stage_kind(stage.name))
        if not times:
            unknown.append(stage.name)
            continue
        left += max(sum(times) / len(times) - entry.get("seconds", 0) / 60, 0.0)
    return left, unknown


def progress_line(state, selected):
    finished = [s for s in selected if state.get(s.name, {}).get("status") == "done"]
    spent = sum(state.get(s.name, {}).get("seconds", 0) for s in selected) / 3600
    left, unknown = minutes_left(state, selected)
    line = (f"{len(finished)} of {len(selected)} stages done, {spent:.1f} h spent; about "
            f"{left / 60:.1f} h left from the times of finished stages of the same kind")
    if unknown:
        line += f", plus {len(unknown)} stage(s) of a kind not finished yet ({', '.join(unknown[:3])}"
        line += ", ...)" if len(unknown) > 3 else ")"
    return line


# -- running ---------------------------------------------------------------------------------------

HEARTBEAT_SECONDS = 60  # how often a running stage records its time so far


def log_path(root, stage):
    return os.path.join(root, "logs", stage.name.replace("/", "_") + ".log")


def run_stage(root, stage):
    """Runs one stage to its end; returns its exit code. Its output goes to its log file. The time
    spent is recorded every minute as well as at the end, so a hard kill loses at most a minute of
    it; the time adds up over resumed runs."""
    path = log_path(root, stage)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    before = read_state(root).get(stage.name, {})
    started, cpu_started = time.time(), cpu_steal.read_cpu_times()

    def spent():
        """The stage's time so far, and the machine's CPU time and what was stolen of it."""
        cpu = cpu_steal.add(before, cpu_steal.elapsed(cpu_started, cpu_steal.read_cpu_times()))
        return {"seconds": round(before.get("seconds", 0.0) + time.time() - started, 1), **cpu}

    record(root, stage.name, {"status": "running", "command": stage.shell(), "log": path,
                              "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    code = 130  # what an interrupt of this process leaves recorded
    children_started = cpu_steal.children_cpu_seconds()
    try:
        with open(path, "a") as log:
            log.write(f"\n$ {stage.shell()}\n")
            log.flush()
            with subprocess.Popen(stage.command(), stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=stopped_with_this_process()) as child:
                record(root, stage.name, {"child": child.pid})  # for a rerun after a kill
                try:
                    code = wait_recording_time(root, stage, child, spent)
                except BaseException:
                    child.kill()  # as subprocess.call does: no orphaned trainer
                    raise
    finally:
        # The child's processor time is known once it has been waited for, so only here.
        record(root, stage.name, {**final_status(code), **spent(),
                                  **cpu_steal.children_cpu_used(children_started, before),
                                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return code


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stopped_with_this_process():
    """A `preexec_fn` that makes the kernel send the child SIGTERM when this process dies, however
    it dies (SIGKILL included: no orphaned trainer goes on training and holding its run folder's
    lock), or None where there is no such thing (not Linux). The signal comes when the *thread*
    that started the child ends, so a stage is waited for in the thread that starts it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    parent = os.getpid()

    def set_death_signal():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was set
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


TRAINER_EXIT_SECONDS = 30  # how long a rerun waits for the trainer of a killed campaign to end


def earlier_trainer(stage, entry):
    """The pid of the trainer an earlier, killed campaign started for `stage`, if it still runs:
    it was sent SIGTERM when its campaign died and may take a moment to end (or, started by a
    campaign from before the death signal, train on). A process is taken for it only while its
    command line is the stage's (a pid is reused; a dead process not yet reaped has none)."""
    pid = entry.get("child")
    if not runs.process_alive(pid):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().decode("utf-8", "replace").split("\0")[:-1]
    except OSError:
        return pid if not os.path.isdir("/proc") else None  # no /proc: judged by the pid alone
    return pid if command[1:] == stage.command()[1:] else None


def wait_for_earlier_trainer(stage, entry):
    """None once no trainer of an earlier campaign runs for `stage` (waiting up to
    TRAINER_EXIT_SECONDS for one to end), else its pid."""
    deadline = time.time() + TRAINER_EXIT_SECONDS
    while (pid := earlier_trainer(stage, entry)) and time.time() < deadline:
        time.sleep(0.1)
    return pid


def missing_input(stage):
    """The first of the files `stage` reads that is not there yet, or None."""
    return next((path for path in stage.reads if not os.path.exists(path)), None)


def wait_recording_time(root, stage, child, spent):
    while True:
        try:
            return child.wait(HEARTBEAT_SECONDS)
        except subprocess.TimeoutExpired:
            record(root, stage.name, spent())


def final_status(code):
    """done, failed (exit code) or interrupted."""
    if code == 0:
        return {"status": "done"}
    return {"status": "interrupted" if code in (130, -2, -15) else f"failed (exit {code})"}


def run_stages(root, selected, rerun_failed=False, all_stages=(), after_each=None):
    """Runs every selected stage not done yet, in order; prints one line per stage and calls
    `after_each()` after each stage that ran (the campaign archives its results). A stage that
    needs a file no stage here has made (the teacher, on a machine new to a campaign restored from
    its archive) first runs the stage of `all_stages` that makes it, done or not. A stage whose
    input another stage writes (`reads`, `waits_for`) and is not there yet waits for it: it is
    skipped with a line and left to do, as is one whose trainer from a killed campaign still runs.
    Only one campaign process runs on a root (`lock_root`)."""
    lock_root(root)
    for stage in selected:
        entry = read_state(root).get(stage.name, {})
        status = stage_status(entry)
        if status == "running":  # a campaign process from before the root's lock is on it
            print(f"{stage.name}: running in process {entry['pid']}, skipped", flush=True)
            continue
        if status == "done" or (status.startswith("failed") and not rerun_failed):
            print(f"{stage.name}: {status}, skipped", flush=True)
            continue
        if missing := missing_input(stage):
            print(f"{stage.name}: waits for {stage.waits_for} ({missing} is not there yet), skipped", flush=True)
            continue
        if pid := wait_for_earlier_trainer(stage, entry):
            print(f"{stage.name}: the trainer a killed campaign started for it (process {pid}) still runs: "
                  f"stop it (kill {pid}), then run again; skipped", flush=True)
            continue
        maker = missing_maker(stage, all_stages)
        if maker is not None:
            print(f"{stage.name}: needs {stage.needs}, which is missing: {maker.name} runs again", flush=True)
            if stage_status(read_state(root).get(maker.name, {})) == "done":
                # The time and machine of the run whose output is lost describe nothing that is
                # left; an interrupted rerun, on the other hand, continues and adds up its time.
                record(root, maker.name, {"rerun": f"{stage.needs} was missing"}, replace=True)
            run_and_report(root, maker)
            if after_each:
                after_each()
        run_and_report(root, stage)
        if after_each:
            after_each()
    return selected


def unfinished(root, selected):
    """(the selected stages that failed, those neither failed nor done), by name."""
    state = read_state(root)
    statuses = {stage.name: stage_status(state.get(stage.name, {})) for stage in selected}
    failed = [name for name, status in statuses.items() if status.startswith("failed")]
    return failed, [name for name, status in statuses.items() if status != "done" and name not in failed]


def missing_maker(stage, all_stages):
    """The stage that makes the missing file `stage` needs, or None if nothing is missing."""
    if not stage.needs or os.path.exists(stage.needs):
        return None
    for other in all_stages:
        if other.makes == stage.needs:
            return other
    raise GreatError(f"{stage.name} needs {stage.needs}, which is missing and no stage makes")


def run_and_report(root, stage):
    print(f"{stage.name}: running ({log_path(root, stage)})", flush=True)
    code = run_stage(root, stage)
    print(f"{stage.name}: {read_state(root)[stage.name]['status']}", flush=True)
    if code in (130, -2):  # the user interrupted: stop the campaign too
        raise KeyboardInterrupt
    return code


def write_report(root, seeds, stem):
    from great_tf.evidence_report import write_report as write

    return write(root, seeds, stem)
