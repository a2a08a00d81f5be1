"""docs/results.md from the evidence campaign's runs (`great_tf.evidence`): every table as mean ±
sample std over the finished seeds, the per-seed values beside it (.json), the figures, the
measured times, and the claims table (docs/design.md#evidence).

Everything is read from the runs' own `result.json` files, so the report can be written at any
moment of the campaign: a table says how many seeds it holds, and a claim with fewer than two
seeds on either side is "cannot be decided yet".

A claim is decided by comparing two methods' seed means against their spread: with d the
difference of the means in the claimed direction and s = sqrt(s_a²/n_a + s_b²/n_b) from the sample
standard deviations, the claim **holds** if d > 2s, **does not hold** if d < -2s, and is
**within the spread** otherwise (Welch's statistic at about the 95 % level for many seeds; with
3 seeds a loose rule, stated as such). Where the paper gives the size of its gap G, a claim whose
interval lies wholly below it (d + 2s < G without d > 2s) also **does not hold**: the gap the paper
reports is excluded at this scale, even where the direction is not.
"""

import glob
import json
import math
import os

from great_tf import evidence
from great_tf.mtl.report import DELTA_M, add_delta_m, cell, mean_and_std, summarize
from great_tf.reporting import markdown_table

HOLDS, FAILS, SPREAD, UNDECIDED = ("holds", "does not hold", "within the spread",
                                   "cannot be decided yet")
DEFENSE_COLUMNS = ("Train", "No attack", "FGSM", "iFGSM", "FGSM Worst", "FGSM Random",
                   "iFGSM Worst", "iFGSM Random", "PGD", "Transfer iFGSM", "SPSA", "APGD-CE",
                   "APGD-T", "Square", "AA")
STRONG_COLUMNS = ("No attack", "APGD-CE", "APGD-T", "Square", "AA")
MODE_LABELS = {"baseline": "Baseline", "adversarial": "Adversarial (FGSM)", "greace": "GREACE",
               "great": "GREAT", "great+ce": "GRE(AT+CE)"}


# -- reading the runs --------------------------------------------------------------------------------

def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
                found.setdefault(first, []).append({**result, "seed": seed})
            for path in sorted(glob.glob(os.path.join(folder, mode, "evaluation", "eps*", "result.json"))):
                name = os.path.basename(os.path.dirname(path))
                if name != first:
                    found.setdefault(name, []).append({**read_json(path), "seed": seed, "method": mode})
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


# -- deciding a claim --------------------------------------------------------------------------------

def values(rows, method, column, **where):
    return [r[column] for r in rows if r.get("method") == method and r.get(column) is not None
            and all(r.get(k) == v for k, v in where.items())]


def verdict(better, worse, paper_gap=None):
    """(verdict, d, s): is the mean of `better` above the mean of `worse` beyond their spread, and
    is the paper's gap still possible? (the rule of the module's docstring)."""
    if len(better) < 2 or len(worse) < 2:
        return UNDECIDED, None, None
    (ma, sa), (mb, sb) = mean_and_std(better), mean_and_std(worse)
    d = ma - mb
    s = math.sqrt(sa ** 2 / len(better) + sb ** 2 / len(worse))
    if d > 2 * s:
        return HOLDS, d, s
    if d < -2 * s or gap_excluded(d, s, paper_gap):
        return FAILS, d, s
    return SPREAD, d, s


def gap_excluded(d, s, paper_gap):
    return paper_gap is not None and d + 2 * s < paper_gap


def summary_text(vals, fmt=".1f"):
    mean, std = mean_and_std(vals)
    if mean is None:
        return "no run yet"
    text = format(mean, fmt) + ("" if std is None else f" ± {format(std, fmt)}")
    return f"{text} (n={len(vals)})"


def comparison(rows, column, better, worse, sign=1.0, fmt=".1f", paper_gap=None, **where):
    """(measured text, verdict) of "`better` has a higher `column` than `worse`" (sign -1: lower),
    by at least `paper_gap` if given (in the claimed direction)."""
    a, b = values(rows, better, column, **where), values(rows, worse, column, **where)
    result, d, s = verdict([sign * v for v in a], [sign * v for v in b], paper_gap)
    measured = f"{better} {summary_text(a, fmt)} vs {worse} {summary_text(b, fmt)}"
    if d is not None:
        measured += f"; d = {sign * d:+{fmt}}, 2s = {2 * s:{fmt}}"
        if result == FAILS and d >= -2 * s:
            measured += f" (the paper's gap, {paper_gap:{fmt}}, is excluded)"
    return measured, result


def best_of(rows, column, methods, candidate, sign=1.0, fmt=".1f", paper_gap=None, **where):
    """(measured, verdict) of "`candidate` has the best `column` among `methods`": it holds if it
    beats every other beyond the spread, does not hold if any other beats it beyond the spread or
    if its lead over any other is below `paper_gap` (the paper's lead over its runner-up) beyond
    the spread."""
    results = [comparison(rows, column, candidate, m, sign, fmt, paper_gap, **where)
               for m in methods if m != candidate]
    verdicts = [v for _, v in results]
    measured = "; ".join(f"{m} {summary_text(values(rows, m, column, **where), fmt)}" for m in methods)
    if UNDECIDED in verdicts:
        return measured, UNDECIDED
    if FAILS in verdicts:
        return measured, FAILS
    return measured, HOLDS if all(v == HOLDS for v in verdicts) else SPREAD


# -- the claims --------------------------------------------------------------------------------------

def defense_claims(rows, dataset, paper_source, paper_gaps=True):
    """The paper's defense claims (Table 1 and Sec. 3.1) on one data set's rows at its first eps;
    with `paper_gaps` False (a data set the paper has no numbers for), their direction only."""
    modes = list(MODE_LABELS)

    def gap(paper_better, paper_worse):
        return paper_better - paper_worse if paper_gaps else None

    claims = [
        (f"{paper_source}: GRE(AT+CE) is the best defense against iFGSM",
         "77.04 (next: GREACE 72.40)",
         *best_of(rows, "iFGSM", modes, "great+ce", paper_gap=gap(77.04, 72.40))),
        (f"{paper_source}: GREACE alone is robust to iFGSM",
         "72.40 vs baseline 1.99",
         *comparison(rows, "iFGSM", "greace", "baseline", paper_gap=gap(72.40, 1.99))),
        (f"{paper_source}: GREAT alone helps against single-step FGSM",
         "47.51 vs baseline 32.75",
         *comparison(rows, "FGSM", "great", "baseline", paper_gap=gap(47.51, 32.75))),
        (f"{paper_source}: GRE(AT+CE) beats FGSM adversarial training on FGSM",
         "81.28 vs 56.88", *comparison(rows, "FGSM", "great+ce", "adversarial", paper_gap=gap(81.28, 56.88))),
        (f"{paper_source}: GRE(AT+CE) keeps clean accuracy (paper: 3.35 points below baseline)",
         "89.97 vs 93.32", *clean_cost(rows)),
        (f"{paper_source}: GREACE is a strong regularizer (lower training accuracy)",
         "92.56 vs 99.97", *comparison(rows, "Train", "baseline", "greace", paper_gap=gap(99.97, 92.56))),
        ("Not in the paper: GRE(AT+CE) stays more robust than the baseline under AutoAttack-style "
         "attacks (APGD-CE, APGD-T, Square)", "not measured", *comparison(rows, "AA", "great+ce", "baseline")),
        ("Not in the paper: GRE(AT+CE) under AA against FGSM adversarial training", "not measured",
         *comparison(rows, "AA", "great+ce", "adversarial")),
    ]
    # Without numbers of its own for the data set, the paper column says where its numbers are from.
    return [(f"{c} [{dataset}]", p if paper_gaps or p == "not measured" else f"CIFAR-10: {p}", m, v)
            for c, p, m, v in claims]


def clean_cost(rows, paper_drop=3.35):
    """Holds if GRE(AT+CE)'s clean accuracy is no more than the paper's drop below the baseline's
    (beyond the spread: the baseline minus the drop is compared with GRE(AT+CE))."""
    a, b = values(rows, "great+ce", "No attack"), values(rows, "baseline", "No attack")
    result, d, s = verdict(a, [v - paper_drop for v in b])
    measured = f"great+ce {summary_text(a)} vs baseline {summary_text(b)}"
    return measured, {FAILS: FAILS, HOLDS: HOLDS, SPREAD: HOLDS}.get(result, result)


def distill_claims(rows):
    claims = []
    for text, regime, other, paper_great, paper_other in (
            ("Table 3: GREAT beats the CE baseline in the sparse regime (5 %)", "5pct", "baseline", 66.55, 65.41),
            ("Table 3: GREAT beats Hinton distillation in the sparse regime", "5pct", "distill", 66.55, 66.45),
            ("Table 3: GREAT beats the CE baseline in the dense regime (100 %)", "100pct", "baseline", 85.72, 84.74),
            ("Table 3: GREAT beats Hinton distillation in the dense regime", "100pct", "distill", 85.72, 85.69),
            ("Sec. 3.2: GREAT beats Sobolev training (sparse)", "5pct", "sobolev", 66.55, 66.50),
            ("Sec. 3.2: GREAT beats Sobolev training (dense)", "100pct", "sobolev", 85.72, 84.98)):
        claims.append((text, f"{paper_great} vs {paper_other}",
                       *comparison(rows, "test accuracy", "great", other, regime=regime, fmt=".2f",
                                   paper_gap=paper_great - paper_other)))
    return claims


def mtl_claims(rows):
    four = ["equal", "uncertainty", "gradnorm", "great"]
    claims = [
        ("Sec. 3.3: GREAT performs better or on par with GradNorm (Δm %)", "not given as Δm; "
         "per task 24.2/.114/.252/.087 vs 23.5/.116/.270/.091", *on_par(rows, DELTA_M, "great", "gradnorm")),
        ("Table 4: GREAT is best of the four on edge detection", "0.252 (next 0.270)",
         *best_of(rows, "edge RMSE", four, "great", sign=-1.0, fmt=".4f", paper_gap=0.270 - 0.252)),
        ("Table 4: GREAT is best of the four on denoised reconstruction", "0.087 (next 0.090)",
         *best_of(rows, "auto RMSE", four, "great", sign=-1.0, fmt=".4f", paper_gap=0.090 - 0.087)),
        ("Sec. 3.3: uncertainty weighting has the highest classification error of the four",
         "26.6 (others 23.5-24.2)",
         *best_of(rows, "class error %", four, "uncertainty", paper_gap=26.6 - 24.2)),
        ("Not in the paper: GREAT against the modern methods (Δm %, rank)", "not measured",
         *rank_text(rows, "great")),
    ]
    return claims


def on_par(rows, column, candidate, other):
    """"Better or on par": holds unless `other` is better beyond the spread."""
    measured, result = comparison(rows, column, candidate, other, fmt=".2f")
    return measured, HOLDS if result in (HOLDS, SPREAD) else result


def rank_text(rows, candidate):
    summary = [r for r in summarize(rows, [DELTA_M]) if r.get(DELTA_M) is not None and r["method"] != "single"]
    summary.sort(key=lambda r: -r[DELTA_M])
    names = [r["method"] for r in summary]
    if candidate not in names:
        return "no run yet", UNDECIDED
    rank = names.index(candidate) + 1
    best = summary[0]
    return (f"rank {rank} of {len(names)} by mean Δm; best {best['method']} {best[DELTA_M]:+.2f}, "
            f"{candidate} {summary[rank - 1][DELTA_M]:+.2f}", "informational")


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


# Every evidence run attacks 500 test images (the medium preset's attack limit).
EVIDENCE_ATTACKED = 500


def findings_with_single_step_check(row):
    """The row's masking findings. A run evaluated before the single-step check existed gets it
    from its stored FGSM curve: the curve's eps-0 point is the clean accuracy on the same attacked
    images, which is what the evaluation gives the check."""
    from great_tf.robustness import check_single_step_above_clean, tolerance

    findings = list(row.get("findings") or [])
    curve = (row.get("curves") or {}).get("FGSM")
    have = {f["check"] for f in findings}
    if findings and curve and curve[0][0] == 0 and "single-step-above-clean" not in have:
        findings.append(check_single_step_above_clean({"FGSM": curve}, curve[1][0],
                                                      tolerance(EVIDENCE_ATTACKED)))
    return findings


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

def epoch_series(run_dirs, tag, scale=1.0, first=1):
    """(epochs, mean over the finished runs) of a scalar TensorBoard tag, over the epochs every
    such run has; None if none has it. A run still training (no result.json yet) is left out, as
    in the tables: it would cut every curve to its epochs. Keras logs epoch k at step k - 1, hence
    `first` 1; a tag logged before training too (the GAL statistics) starts at 0."""
    from great_tf.summaries import read_events

    series = []
    for run_dir in run_dirs:
        finished = os.path.exists(os.path.join(run_dir, "result.json"))
        events = read_events(run_dir).get(tag) if finished else None
        if events:
            series.append([float(v) * scale for _, v in sorted(events, key=lambda e: e[0])])
    if not series:
        return None
    n = min(len(v) for v in series)
    return list(range(first, first + n)), [sum(v[i] for v in series) / len(series) for i in range(n)]


def curve_panels(lines_by_label, panels):
    """{panel title: {label: series}} from {label: [run dirs]} and [(panel title, tag, scale)],
    dropping what no run logged."""
    found = {}
    for title, tag, scale in panels:
        for label, run_dirs in lines_by_label.items():
            series = epoch_series(run_dirs, tag, scale)
            if series:
                found.setdefault(title, {})[label] = series
    return found


def defense_training_figure(root, dataset, seeds, figures_dir):
    runs_by_mode = {MODE_LABELS[m]: [os.path.join(evidence.defense_dir(root, dataset, s), m) for s in range(seeds)]
                    for m in MODE_LABELS}
    panels = curve_panels(runs_by_mode, [("training accuracy % (training mode)", "train/epoch_accuracy", 100.0),
                                         ("test accuracy % (clean)", "validation/epoch_accuracy", 100.0)])
    return figure_if_any(panels, figures_dir, f"defense_{dataset}_training.png",
                         f"{dataset}: accuracy over training (mean over seeds)", "epoch", "%")


MTL_CURVES = [("class error %", "validation/epoch_class_error", 1.0),
              ("colour RMSE", "validation/epoch_colour_rmse", 1.0),
              ("edge RMSE", "validation/epoch_edges_rmse", 1.0),
              ("auto RMSE", "validation/epoch_auto_rmse", 1.0)]


def mtl_figures(root, seeds, methods, figures_dir):
    """Test metrics over training per method, and GREAT's GAL statistics over training."""
    runs_by_method = {m: [os.path.join(evidence.mtl_dir(root, s), m) for s in range(seeds)] for m in methods}
    training = figure_if_any(curve_panels(runs_by_method, MTL_CURVES), figures_dir, "mtl_training.png",
                             "Noisy CIFAR-10: test metrics over training (mean over seeds)", "epoch", "")
    great = {"GREAT": [os.path.join(evidence.mtl_dir(root, s), "great") for s in range(seeds)]}
    gal_panels = {}
    for task in ("class", "colour", "edges", "auto"):
        for stat in ("mean", "min", "max"):
            series = epoch_series(great["GREAT"], f"great/gal/{task}/{stat}", first=0)
            if series:
                gal_panels.setdefault(f"GAL {task}", {})[stat] = series
    return [training, figure_if_any(gal_panels, figures_dir, "mtl_gal.png",
                                    "GREAT: gradient-alignment layer gamma over training (mean over seeds)",
                                    "epoch (0: initial)", "gamma")]


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
                      "CNN-5 students: test accuracy over training (mean over seeds)", "epoch", "%"),
        figure_if_any(gradients, figures_dir, "distill_gradients.png",
                      "Student against teacher input gradients on a fixed probe batch (mean over seeds)",
                      "epoch (0: before training)", ""),
        figure_if_any(discriminator, figures_dir, "distill_discriminator.png",
                      "GREAT: discriminator accuracy % on input gradients (mean over seeds)",
                      "epoch (0: before training)", "%", ylim=(0, 101)),
    ]


def figure_if_any(panels, figures_dir, name, title, xlabel, ylabel, ylim=None, xscale="linear"):
    from great_tf.reporting import plot_panels

    if not panels:
        return None
    return plot_panels(panels, os.path.join(figures_dir, name), title, xlabel, ylabel, ylim, xscale)


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
            mean_table(rows, columns, order=order, formats=formats), ""]


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
            "Minutes are a stage's wall clock, summed over resumed attempts; one stage ran at a time.")


def timing_section(root):
    state = evidence.read_state(root)
    if not state:
        return ["No stage has run yet.", ""]
    shown = [{"stage": name, "state": evidence.stage_status(e),
              "minutes": f"{e['seconds'] / 60:.1f}" if e.get("seconds") else "",
              "command": f"`{e.get('command', '')}`"} for name, e in state.items()]
    return [machine_line(), "", markdown_table(shown, ["stage", "state", "minutes", "command"]), ""]


def claims_section(claims):
    shown = [{"claim": c, "paper": p, "measured here": m, "verdict": f"**{v}**"} for c, p, m, v in claims]
    return [markdown_table(shown, ["claim", "paper", "measured here", "verdict"]), ""]


def write_report(root, seeds, stem):
    """Writes `<stem>.md` (and `<stem>.json` with every per-seed row); returns the Markdown."""
    from great_tf.sweep_report import sweep_claims, sweep_figure, sweep_section  # they read this module

    figures_dir = os.path.join(os.path.dirname(os.path.abspath(stem)), "figures")
    sections, claims, data = [], [], {}
    for dataset, source in (("cifar10", "Table 1"), ("mnist", "Table 1's claims on MNIST")):
        lines, found = defense_section(root, dataset, seeds, figures_dir)
        sections += lines
        data[f"defense_{dataset}"] = found
        if found:
            claims += defense_claims(found[evidence.DEFENSE_EPS[dataset][0][1]], dataset, source,
                                     paper_gaps=dataset == "cifar10")
    mtl, directions = mtl_rows(root, seeds)
    distill = distill_rows(root, seeds)
    claims += distill_claims(distill) + mtl_claims(mtl) + sweep_claims(root, distill)
    data.update(mtl=mtl, distill=distill)
    discussion = read_text(f"{stem}_discussion.md")
    text = "\n".join([
        "# Results: what GREAT does and does not do at CPU scale", "",
        f"Written by `python -m trainers.evidence --root {root} --report {stem}` from the runs "
        f"finished so far (seeds 0..{seeds - 1} planned); every table says how many seeds it holds.",
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
