"""docs/results.md from the evidence campaign's runs (`great_tf.evidence`): every table as mean ±
sample std over the finished seeds, the per-seed values beside it (.json), the figures, the
measured times, and the claims table (`great_tf.claims`; docs/design.md#evidence).

Everything is read from the runs' own `result.json` files, so the report can be written at any
moment of the campaign: a table says how many seeds it holds, and a claim with fewer than two
seeds on either side is "cannot be decided yet".
"""

import glob
import json
import os

from great_tf import evidence
from great_tf.claims import findings_with_single_step_check, measured_claims, out_of_reach_claims, tally
from great_tf.mtl.report import DELTA_M, add_delta_m, cell, summarize
from great_tf.reporting import markdown_table

DEFENSE_COLUMNS = ("Train", "No attack", "FGSM", "iFGSM", "FGSM Worst", "FGSM Random",
                   "iFGSM Worst", "iFGSM Random", "PGD", "Transfer iFGSM", "SPSA", "APGD-CE",
                   "APGD-T", "Square", "AA w/o FAB-T", "AA")
STRONG_COLUMNS = ("No attack", "APGD-CE", "APGD-T", "Square", "AA w/o FAB-T", "AA")
MODE_LABELS = {"baseline": "Baseline", "adversarial": "Adversarial (FGSM)", "greace": "GREACE",
               "great": "GREAT", "great+ce": "GRE(AT+CE)"}


# -- reading the runs --------------------------------------------------------------------------------

def read_json(path):
    """The JSON object at `path` (a result, a sweep table, kept curves); None if missing; a one-line
    `GreatError` if it is unreadable or not an object."""
    from great_tf.errors import GreatError
    from great_tf.runs import read_json as read

    fix = "delete it (its stage then runs again) or put back a good copy (the archive's, or git's)"
    value = read(path, fix=fix)
    if value is not None and not isinstance(value, dict):
        raise GreatError(f"{path} is not a JSON object: {fix}")
    return value


def named_autoattack(result):
    """A defense result with its AutoAttack column named for what ran: a run evaluated before
    FAB-T joined "AA" (no "AA w/o FAB-T" column) measured the ensemble without FAB-T, so its "AA"
    is that one."""
    if result.get("AA") is None or "AA w/o FAB-T" in result:
        return result
    renamed = {k: v for k, v in result.items() if k != "AA"}
    renamed["AA w/o FAB-T"] = result["AA"]
    return renamed


def defense_rows(root, dataset, seeds):
    """{eps folder name: per-seed rows} of every finished defense run of `dataset`: the training
    run's own evaluation (at the data set's first eps) and every re-evaluation."""
    from great_tf.defense import MODES

    first = evidence.DEFENSE_EPS[dataset][0][1]
    found = {}
    for seed in range(seeds):
        folder = evidence.defense_dir(root, dataset, seed)
        for mode in MODES:
            result = read_json(os.path.join(folder, mode, "result.json"))
            if result is not None:
                found.setdefault(first, []).append({**named_autoattack(result), "seed": seed})
            for path in sorted(glob.glob(os.path.join(folder, mode, "evaluation", "eps*", "result.json"))):
                name = os.path.basename(os.path.dirname(path))
                if name != first:
                    found.setdefault(name, []).append({**named_autoattack(read_json(path)), "seed": seed,
                                                       "method": mode})
    return found


def mtl_rows(root, seeds):
    """Per-seed rows of every finished multi-task run, the single-task baselines as one row per
    seed (when all four networks of the seed have finished), Δm against the seed's own single-task
    row. Returns (rows, metric directions)."""
    from great_tf.mtl.benchmarks import get_benchmark
    from great_tf.mtl.experiment import single_row
    from great_tf.mtl.report import SINGLE, column_directions

    benchmark = get_benchmark("cifar10_noisy")
    directions = column_directions(benchmark.tasks)
    rows = []
    for seed in range(seeds):
        folder = evidence.mtl_dir(root, seed)
        seed_rows = []
        singles = [read_json(os.path.join(folder, SINGLE, t.name, "result.json")) for t in benchmark.tasks]
        if all(singles):
            seed_rows.append(single_row(seed, singles))
        for path in sorted(glob.glob(os.path.join(folder, "*", "result.json"))):
            method = os.path.basename(os.path.dirname(path))
            seed_rows.append({**read_json(path), "method": method, "seed": seed})
        rows += add_delta_m(seed_rows, directions)[0]
    return rows, directions


def distill_rows(root, seeds):
    """Per-seed rows {method, regime, test accuracy, ...} of every finished student."""
    from great_tf.distill.experiment import REGIMES, regime_name

    rows = []
    for seed in range(seeds):
        for fraction in REGIMES:
            pattern = os.path.join(evidence.distill_dir(root, seed), f"*_{regime_name(fraction)}", "*",
                                   "result.json")
            for path in sorted(glob.glob(pattern)):
                result = read_json(path)
                rows.append({**result, "regime": regime_name(fraction), "seed": seed})
    return rows



# -- tables ------------------------------------------------------------------------------------------

def mean_table(rows, columns, key="method", order=None, fmt=".1f", formats=None):
    """A Markdown table of mean ± std over seeds, one row per `key` value."""
    formats = formats or {}
    summary = summarize([{**r, "method": r[key]} for r in rows], list(columns))
    if order:
        summary.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    header = {c: c.replace("|", "\\|") for c in columns}  # "normals 1-|cos|" in a Markdown table
    shown = [{"method": r["method"], "seeds": r["seeds"],
              **{header[c]: cell(r, c, formats.get(c, fmt)) for c in columns}} for r in summary]
    return markdown_table(shown, ["method", "seeds", *header.values()])


def present(columns, rows):
    return [c for c in columns if any(r.get(c) is not None for r in rows)]


def defense_section(root, dataset, seeds, figures_dir):
    found = defense_rows(root, dataset, seeds)
    lines = [f"### {dataset}", ""]
    if not found:
        return lines + ["No finished run yet.", ""], {}
    for name, rows in found.items():
        columns = present(DEFENSE_COLUMNS, rows)
        lines += [f"**{eps_label(name)}** (test accuracy %, mean ± sample std over seeds)", "",
                  mean_table(rows, columns, order=list(MODE_LABELS)), ""]
        lines += findings_lines(rows) + [""]
    figures = [plot_curves(found, dataset, figures_dir), defense_training_figure(root, dataset, seeds, figures_dir)]
    return lines + figure_lines(figures, figures_dir), found


def eps_label(name):
    eps = name[len("eps"):]
    if "of" in eps:
        num, scale = eps.split("of")
        return f"eps = {num}/{scale}"
    return f"eps = {eps} ([0, 1] pixel scale)"



def findings_lines(rows):
    """How many seeds each masking check fired for, per method."""
    fired = {}
    for r in rows:
        for f in findings_with_single_step_check(r):
            if f.get("flagged"):
                fired.setdefault(r["method"], {}).setdefault(f["check"], []).append(r["seed"])
    if not fired:
        return ["Masking findings: no check fired for any method and seed."]
    parts = [f"{m}: " + ", ".join(f"{c} (seed{'s' * (len(s) > 1)} {', '.join(map(str, s))})"
                                  for c, s in checks.items())
             for m, checks in fired.items()]
    return ["Masking findings (checks that fired): " + "; ".join(parts) + "."]


def plot_curves(found, dataset, figures_dir):
    """Accuracy against eps, mean over seeds, per attack panel, from the training runs' curves."""
    from great_tf.reporting import plot_accuracy_vs_eps

    rows = next(iter(found.values()))
    panels = {}
    for attack in ("iFGSM", "APGD-CE"):
        for method in MODE_LABELS:
            curves = [r["curves"][attack] for r in rows if r["method"] == method and attack in (r.get("curves") or {})]
            if curves:
                eps = curves[0][0]
                acc = [sum(c[1][i] for c in curves) / len(curves) for i in range(len(eps))]
                panels.setdefault(attack, {})[MODE_LABELS[method]] = (eps, acc)
    if not panels:
        return None
    path = os.path.join(figures_dir, f"defense_{dataset}_accuracy_vs_eps.png")
    return plot_accuracy_vs_eps(panels, path, f"{dataset}: accuracy against eps (mean over seeds)")


# -- curves over training -----------------------------------------------------------------------------

def run_series(run_dirs, tag, scale=1.0):
    """Per finished run that logged the scalar `tag`, its values in step order. A run still
    training (no result.json yet) is left out, as in the tables: it would cut every curve to its
    epochs."""
    series = []
    for run_dir in run_dirs:
        finished = os.path.exists(os.path.join(run_dir, "result.json"))
        events = run_scalars(run_dir).get(tag) if finished else None
        if events:
            series.append([float(v) * scale for _, v in sorted(events, key=lambda e: e[0])])
    return series


def epoch_series(run_dirs, tag, scale=1.0, first=1):
    """(epochs, mean over the finished runs) of a scalar TensorBoard tag, over the epochs every
    such run has; None if none has it. Keras logs epoch k at step k - 1, hence `first` 1; a tag
    logged before training too (the GAL statistics) starts at 0."""
    series = run_series(run_dirs, tag, scale)
    if not series:
        return None
    n = min(len(v) for v in series)
    return list(range(first, first + n)), [sum(v[i] for v in series) / len(series) for i in range(n)]


def run_scalars(run_dir):
    """{tag: [(step, value)]} of a run's scalars: from its event files, or from the `scalars.json`
    that `great_tf.evidence_archive` keeps of them once the event files are gone."""
    from great_tf.evidence_archive import SCALARS
    from great_tf.summaries import read_events

    kept = read_json(os.path.join(run_dir, SCALARS))
    if kept is not None:
        return {tag: [tuple(e) for e in events] for tag, events in kept.items()}
    return read_events(run_dir)


def curve_panels(lines_by_label, panels):
    """{panel title: {label: series}} from {label: [run dirs]} and [(panel title, tag, scale)],
    dropping what no run logged; a line that averages fewer runs than it was given says how many
    ("GREAT (2 of 3)"), so a figure drawn mid-campaign does not pass for a full one."""
    found = {}
    for title, tag, scale in panels:
        for label, run_dirs in lines_by_label.items():
            series = epoch_series(run_dirs, tag, scale)
            if series:
                runs = len(run_series(run_dirs, tag))
                shown = label if runs == len(run_dirs) else f"{label} ({runs} of {len(run_dirs)})"
                found.setdefault(title, {})[shown] = series
    return found


def defense_training_figure(root, dataset, seeds, figures_dir):
    runs_by_mode = {MODE_LABELS[m]: [os.path.join(evidence.defense_dir(root, dataset, s), m) for s in range(seeds)]
                    for m in MODE_LABELS}
    panels = curve_panels(runs_by_mode, [("training accuracy % (training mode)", "train/epoch_accuracy", 100.0),
                                         ("test accuracy % (clean)", "validation/epoch_accuracy", 100.0)])
    return figure_if_any(panels, figures_dir, f"defense_{dataset}_training.png",
                         f"{dataset}: accuracy over training (mean over seeds)", "epoch", "%", root=root)


MTL_CURVES = [("class error %", "validation/epoch_class_error", 1.0),
              ("colour RMSE", "validation/epoch_colour_rmse", 1.0),
              ("edge RMSE", "validation/epoch_edges_rmse", 1.0),
              ("auto RMSE", "validation/epoch_auto_rmse", 1.0)]


def mtl_figures(root, seeds, methods, figures_dir):
    """Test metrics over training per method, and GREAT's GAL statistics over training."""
    runs_by_method = {m: [os.path.join(evidence.mtl_dir(root, s), m) for s in range(seeds)] for m in methods}
    training = figure_if_any(curve_panels(runs_by_method, MTL_CURVES), figures_dir, "mtl_training.png",
                             "Noisy CIFAR-10: test metrics over training (mean over seeds)", "epoch", "",
                             root=root)
    great = {"GREAT": [os.path.join(evidence.mtl_dir(root, s), "great") for s in range(seeds)]}
    gal_panels = {}
    for task in ("class", "colour", "edges", "auto"):
        for stat in ("mean", "min", "max"):
            series = epoch_series(great["GREAT"], f"great/gal/{task}/{stat}", first=0)
            if series:
                gal_panels.setdefault(f"GAL {task}", {})[stat] = series
    return [training, figure_if_any(gal_panels, figures_dir, "mtl_gal.png",
                                    "GREAT: gradient-alignment layer gamma over training (mean over seeds)",
                                    "epoch (0: initial)", "gamma", root=root)]


def distill_figures(root, seeds, figures_dir):
    """Per regime: test accuracy over training per method; the student's input gradient against
    the teacher's (cosine and norm, on the fixed probe batch) per method; and GREAT's
    discriminator accuracy on each side's gradients (how clearly it tells them apart)."""
    from great_tf.distill import METHOD_NAMES
    from great_tf.distill.experiment import REGIMES, regime_name

    def run_dirs(fraction, method):
        return [os.path.join(evidence.distill_dir(root, s), f"cnn5_{regime_name(fraction)}", method)
                for s in range(seeds)]

    accuracy, gradients, discriminator = {}, {}, {}
    for fraction in REGIMES:
        regime = f"{'dense' if fraction == 1.0 else 'sparse'} ({fraction:.0%})"
        # The probe summaries are logged before training (step 0) and after every epoch.
        for title, tag, scale, first, into in (
                ("test accuracy %", "validation/epoch_accuracy", 100.0, 1, accuracy),
                ("cosine(student, teacher) of the input gradients", "great/input_gradient_cosine/student_teacher",
                 1.0, 0, gradients),
                ("student input-gradient norm", "great/input_gradient_norm/student", 1.0, 0, gradients)):
            for method, label in METHOD_NAMES.items():
                series = epoch_series(run_dirs(fraction, method), tag, scale, first)
                if series:
                    into.setdefault(f"{regime}: {title}", {})[label] = series
        for side in ("teacher", "student"):
            series = epoch_series(run_dirs(fraction, "great"), f"great/discriminator_accuracy/{side}", 100.0, 0)
            if series:
                discriminator.setdefault(f"{regime}", {})[f"on {side} gradients"] = series
    return [
        figure_if_any(accuracy, figures_dir, "distill_training.png",
                      "CNN-5 students: test accuracy over training (mean over seeds)", "epoch", "%", root=root),
        figure_if_any(gradients, figures_dir, "distill_gradients.png",
                      "Student against teacher input gradients on a fixed probe batch (mean over seeds)",
                      "epoch (0: before training)", "", root=root),
        figure_if_any(discriminator, figures_dir, "distill_discriminator.png",
                      "GREAT: discriminator accuracy % on input gradients (mean over seeds)",
                      "epoch (0: before training)", "%", ylim=(0, 101), root=root),
    ]


KEPT_FIGURES_DIR = "figures"  # under a root: the figures no run's curves can draw any more


def figure_if_any(panels, figures_dir, name, title, xlabel, ylabel, ylim=None, xscale="linear", root=None):
    """The figure `name` drawn from `panels`; without any, the figure as it was last drawn, or None.

    A figure drawn earlier from runs whose curves are lost (they ran on a machine that went away
    before the archive kept `scalars.json`) cannot be drawn again. It is kept in `figures_dir`,
    and a copy goes to `<root>/figures`, which the archive keeps, so that a report written from
    the archive alone has it too."""
    import shutil

    from great_tf.reporting import plot_panels

    path = os.path.join(figures_dir, name)
    if panels:
        return plot_panels(panels, path, title, xlabel, ylabel, ylim, xscale)
    kept = os.path.join(root, KEPT_FIGURES_DIR, name) if root else None
    if kept and os.path.exists(path):
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        shutil.copyfile(path, kept)
    elif kept and os.path.exists(kept):
        os.makedirs(figures_dir, exist_ok=True)
        shutil.copyfile(kept, path)
    return path if os.path.exists(path) else None


def figure_lines(paths, figures_dir):
    base = os.path.dirname(figures_dir)
    return [f"![{os.path.basename(p)}]({os.path.relpath(p, base)})" for p in paths if p] + [""]


def mtl_section(rows, directions):
    if not rows:
        return ["No finished run yet.", ""]
    columns = [*directions, DELTA_M, "train s"]
    formats = {c: ".4f" for c in directions if "RMSE" in c}
    formats.update({DELTA_M: ".2f", "train s": ".0f", "class error %": ".2f"})
    summary = summarize(rows, columns)
    order = [r["method"] for r in sorted(summary, key=lambda r: -(r.get(DELTA_M) or -1e9))]
    return ["Noisy CIFAR-10 subset, 4 tasks; lower is better for every metric, higher for Δm % "
            "(against the same seed's single-task networks).", "",
            mean_table(rows, columns, order=order, formats=formats), "", *floor_lines(formats)]


def floor_lines(formats):
    """The metrics of a predictor that ignores its input (great_tf/mtl/floors.py): where a task
    counts as not learned. Left out where the data set cannot be read."""
    from great_tf.errors import GreatError
    from great_tf.mtl.floors import benchmark_floors

    try:
        floors = benchmark_floors("cifar10_noisy")  # the targets are clean: the same for every seed
    except GreatError:
        return []
    shown = ", ".join(f"{column.removesuffix(' %')} {format(value, formats.get(column, '.2f'))}"
                      f"{' %' * column.endswith(' %')}" for column, value in floors.items())
    return [f"Without looking at the input (the training set's most frequent class and per-pixel mean "
            f"target map, `great_tf.mtl.floors`): {shown}. A method at this floor has not learned the task.", ""]


def distill_section(rows):
    if not rows:
        return ["No finished run yet.", ""]
    lines = []
    for regime, label in (("100pct", "dense (100 % of the 5,000 images)"), ("5pct", "sparse (5 %: 250 images)")):
        mine = [r for r in rows if r["regime"] == regime]
        if mine:
            lines += [f"**{label}**, CNN-5 student, test accuracy %", "",
                      mean_table(mine, ["test accuracy", "train s"], order=["baseline", "distill", "sobolev", "great"],
                                 formats={"test accuracy": ".2f", "train s": ".0f"}), ""]
    return lines


def machine_line():
    import platform

    import keras
    import tensorflow as tf

    return (f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; Python "
            f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}. "
            "Minutes are a stage's wall clock, summed over resumed attempts; one stage ran at a time. "
            "This is a shared virtual machine: *CPU stolen* is the share of its CPU time the host "
            "gave to others while the stage ran (from /proc/stat), which stretches the wall clock. "
            "*CPU minutes* are what the stage's own processes used of the processors (user plus "
            "system time, both cores counted), which neither a pause nor the host's steal inflates. "
            "Both are blank where a stage ran before they were recorded.")


def timing_section(root):
    from great_tf.cpu_steal import cpu_minutes, stolen_percent

    state = evidence.read_state(root)
    if not state:
        return ["No stage has run yet.", ""]
    shown = [{"stage": name, "state": evidence.stage_status(e),
              "minutes": f"{e['seconds'] / 60:.1f}" if e.get("seconds") else "",
              "CPU stolen": "" if stolen_percent(e) is None else f"{stolen_percent(e):.0f} %",
              "CPU minutes": "" if cpu_minutes(e) is None else f"{cpu_minutes(e):.1f}",
              "command": f"`{e.get('command', '')}`"} for name, e in state.items()]
    columns = ["stage", "state", "minutes", "CPU stolen", "CPU minutes", "command"]
    return [machine_line(), "", markdown_table(shown, columns), ""]


def campaign_extent(root, seeds):
    """Which runs the page is drawn from: all of the campaign's stages, or how many of them so far
    (a reader must not take a page written mid-campaign for the final one)."""
    planned = evidence.stages(root, seeds)
    state = evidence.read_state(root)
    done = sum(state.get(stage.name, {}).get("status") == "done" for stage in planned)
    if done == len(planned):
        return f"from all {done} stages of the campaign (seeds 0..{seeds - 1}), every one finished"
    return (f"from the runs finished so far ({done} of {len(planned)} stages done; seeds 0..{seeds - 1} "
            "planned)")


def claims_section(claims):
    shown = [{"claim": c, "paper": p, "measured here": m, "verdict": f"**{v}**"} for c, p, m, v in claims]
    return [tally(claims), "", markdown_table(shown, ["claim", "paper", "measured here", "verdict"]), ""]


def write_report(root, seeds, stem):
    """Writes `<stem>.md` (and `<stem>.json` with every per-seed row); returns the Markdown."""
    from great_tf.sweep_report import sweep_claims, sweep_figure, sweep_section  # they read this module

    check_something_finished(root, stem)
    figures_dir = os.path.join(os.path.dirname(os.path.abspath(stem)), "figures")
    check_writable(stem, figures_dir)
    sections, defense, data = [], {}, {}
    for dataset in ("cifar10", "mnist"):
        lines, found = defense_section(root, dataset, seeds, figures_dir)
        sections += lines
        data[f"defense_{dataset}"] = found
        defense[dataset] = found.get(evidence.DEFENSE_EPS[dataset][0][1], [])  # the training eps
    mtl, directions = mtl_rows(root, seeds)
    distill = distill_rows(root, seeds)
    claims = measured_claims(defense, distill, mtl) + sweep_claims(root, distill) + out_of_reach_claims()
    data.update(mtl=mtl, distill=distill)
    discussion = read_text(f"{stem}_discussion.md")
    text = "\n".join([
        "# Results: what GREAT does and does not do at CPU scale", "",
        f"Written by `python -m trainers.evidence --root {root} --report {stem}` "
        f"{campaign_extent(root, seeds)}; every table says how many seeds it holds.",
        "",
        "## Claims", "", *claims_section(claims),
        *([discussion, ""] if discussion else []),
        "## Adversarial defense", "", *sections,
        "## Knowledge distillation", "", *distill_section(distill),
        *figure_lines(distill_figures(root, seeds, figures_dir), figures_dir),
        "## Multi-task learning", "", *mtl_section(mtl, directions),
        *figure_lines(mtl_figures(root, seeds, sorted({r["method"] for r in mtl} - {"single"}), figures_dir),
                      figures_dir),
        "## Hyperparameter sweeps (keras-tuner)", "", *sweep_section(root),
        *figure_lines([sweep_figure(root, figures_dir)], figures_dir),
        "## Commands and measured times", "", *timing_section(root),
    ])
    with open(f"{stem}.md", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump(strip_arrays(data), f, indent=1, default=str)
    print(f"written to {stem}.md and {stem}.json")
    return text


def check_something_finished(root, stem):
    """A one-line error for a root where no stage has finished (a mistyped root, say): its report
    would be every table empty and every claim undecided, written over `stem`.md."""
    from great_tf.errors import GreatError
    from great_tf.evidence_archive import kept_files

    state = evidence.read_state(root)
    if not (any(entry.get("status") == "done" for entry in state.values()) or
            any(os.path.basename(f) == "result.json" for f in kept_files(root))):
        raise GreatError(f"no stage of the campaign in {root} has finished: nothing to report (check the "
                         f"root; {stem}.md is left as it is)")


def check_writable(stem, figures_dir):
    """A one-line error if the report's files cannot be written where `stem` puts them."""
    from great_tf.errors import GreatError

    try:
        os.makedirs(figures_dir, exist_ok=True)
        for path in (f"{stem}.md", f"{stem}.json"):
            with open(path, "a", encoding="utf-8"):
                pass
    except OSError as err:
        raise GreatError(f"cannot write the report {stem}.md ({err.strerror or type(err).__name__}"
                         f"{': ' + err.filename if err.filename else ''}): choose a stem in a writable "
                         f"folder") from None


def read_text(path):
    """The hand-written discussion that goes under the claims table (`<stem>_discussion.md`), or
    None: the tables are generated, what they mean is written by a person."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def strip_arrays(value):
    """The report's data without the bulky saliency maps."""
    if isinstance(value, dict):
        return {k: strip_arrays(v) for k, v in value.items() if k != "saliency"}
    if isinstance(value, list):
        return [strip_arrays(v) for v in value]
    return value
