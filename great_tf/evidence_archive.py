"""The evidence campaign's small files, kept in the repository so that finished stages outlive the
machine they ran on (docs/design.md#evidence).

A campaign's root holds checkpoints, saved models and TensorBoard event files: too big to commit,
and lost with the machine. What the report needs of a finished stage is small: its `result.json`
files, the sweeps' tables, `campaign.json`, and each run's scalar curves; and what a sweep needs
to go on is keras-tuner's `oracle.json`, `tuner0.json` and each trial's `trial.json`. `archive` copies those
into a folder of the repository (`runs/evidence`), with each run's scalars written out as
`scalars.json`; `restore` copies them back into a root that lacks them, so a campaign on a new
machine skips the stages that finished elsewhere and the report is written from every stage.

Paths inside `campaign.json` commands name the folder the file is in, so an archived command is the
one a person would type from the repository's top.
"""

import fnmatch
import os
import shutil

from great_tf import evidence, runs
from great_tf.errors import GreatError
from great_tf.evidence_report import KEPT_FIGURES_DIR, read_json, strip_arrays

# What the report reads, and the state of keras-tuner's finished trials (so a sweep cut off with
# its machine reruns only its unfinished trial); everything else (checkpoints, *.keras, event
# files) stays behind.
KEPT = ("result.json", "sweep_*.md", "sweep_*.json", "scalars.json", "oracle.json", "trial.json", "tuner[0-9]*.json")
SCALARS = "scalars.json"
# The figures drawn from curves that are lost (`evidence_report.figure_if_any`), at the root's top.
KEPT_FIGURES = os.path.join(KEPT_FIGURES_DIR, "*.png")


def kept_files(folder):
    """Paths, relative to `folder`, of every file the report reads (campaign.json aside)."""
    found = []
    for here, _, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(here, name), folder)
            if any(fnmatch.fnmatch(name, pattern) for pattern in KEPT) or fnmatch.fnmatch(rel, KEPT_FIGURES):
                found.append(rel)
    return sorted(found)


def copy_json_or_text(source, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if source.endswith(".json"):
        data = read_json(source)  # one line if it is corrupt, not a traceback
        write_json(target, strip_arrays(data))  # the saliency maps: big, and the report never reads them
    else:
        shutil.copyfile(source, target)


def write_json(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    runs.write_json(path, data)  # atomic: an interruption never leaves half a file


def scalar_curves(run_dir):
    """{tag: [[step, value], ...]} of every scalar a run logged to TensorBoard (histograms left
    out), or {} when it logged nothing."""
    from great_tf.summaries import read_events

    curves = {}
    for tag, events in read_events(run_dir).items():
        if events and all(v.ndim == 0 for _, v in events):
            curves[tag] = [[int(s), float(v)] for s, v in sorted(events, key=lambda e: e[0])]
    return curves


def write_scalars(root):
    """`scalars.json` beside every finished run's `result.json` under `root` that has event files
    and no `scalars.json` yet (a finished run's curves no longer change)."""
    for rel in kept_files(root):
        if os.path.basename(rel) != "result.json":
            continue
        run_dir = os.path.join(root, os.path.dirname(rel))
        target = os.path.join(run_dir, SCALARS)
        if not os.path.exists(target) and (curves := scalar_curves(run_dir)):
            write_json(target, curves)


def relocated(state, old, new):
    """campaign.json's entries with the folder `old` replaced by `new` in their commands and paths."""
    old, new = os.path.normpath(old), os.path.normpath(new)
    return {name: {k: v.replace(old, new) if isinstance(v, str) else v for k, v in entry.items()}
            for name, entry in state.items()}


def merged_state(kept, live):
    """Both campaign states, the live one winning for a stage both have (it is the newer)."""
    return {**kept, **live}


def same_folder(a, b):
    return os.path.abspath(a) == os.path.abspath(b)


def archive(root, dest):
    """Copies the small files of every finished run under `root` into `dest` (overwriting: the
    live root is the truth), and merges root's campaign.json into dest's."""
    write_scalars(root)
    if same_folder(root, dest):  # a campaign run inside the repository is its own archive
        return
    runs.make_run_folder(dest, argument="archive folder")
    for rel in kept_files(root):
        copy_json_or_text(os.path.join(root, rel), os.path.join(dest, rel))
    live = relocated(evidence.read_state(root), root, dest)
    write_json(os.path.join(dest, evidence.STATE_NAME), merged_state(evidence.read_state(dest), live))


def restore(dest, root):
    """Copies into `root` each archived file it lacks, and adds to its campaign.json the stages it
    has no entry for; returns how many files it copied."""
    if same_folder(root, dest):
        return 0
    runs.make_run_folder(root, argument="root")
    copied = 0
    for rel in kept_files(dest):
        target = os.path.join(root, rel)
        if not os.path.exists(target):
            copy_json_or_text(os.path.join(dest, rel), target)
            copied += 1
    # A stage archived while it ran was stopped with its machine; its process number means
    # nothing here (and may belong to another process), so it reads as interrupted.
    kept = {name: {**entry, "pid": None} for name, entry in relocated(evidence.read_state(dest), dest, root).items()}
    if kept:
        write_json(os.path.join(root, evidence.STATE_NAME), merged_state(kept, evidence.read_state(root)))
    return copied


def restore_from(dest, root):
    """`restore`, saying how many files it brought back; nothing when `dest` does not exist yet."""
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise GreatError(f"the archive {dest} is not a folder: choose another archive folder")
    if os.path.isdir(dest):
        copied = restore(dest, root)
        if copied:
            print(f"{copied} file(s) of finished stages restored from {dest} into {root}", flush=True)


def archive_into(dest, root):
    """`archive` when there is an archive folder to keep (`dest`) and a root to keep it from."""
    if dest and os.path.isdir(root):
        archive(root, dest)
