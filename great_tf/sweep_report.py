"""The keras-tuner sweeps' part of docs/results.md: their tables, a figure of the distillation
sweeps, and the claims they decide (docs/design.md#evidence).

A sweep is one run per setting, not several seeds, so its noise is taken from elsewhere:

- Distillation (Table 3's claim that GREAT's single alpha carries over to another regime while
  distillation's T and alpha must be searched again). In each regime, a method loses its best
  validation accuracy there minus the accuracy of the setting that was best in the other regime;
  the method's *transfer cost* is that loss averaged over the two regimes. Its settings carry
  over if the cost is within twice the method's seed std in the campaign's distillation runs (the
  noise of one run). The claim holds if GREAT's carry over and distillation's do not; it does not
  hold otherwise, including when both carry over (then nothing needs searching again).
- Defense (GRE(AT+CE) buys robustness within 2 clean points of the baseline). The best feasible
  trial's AA accuracy against the baseline's, with the binomial standard error of the attacked
  images as the noise: it holds if the gain exceeds twice that.
"""

import glob
import math
import os
import re

from great_tf import evidence
from great_tf.claims import FAILS, HOLDS, SPREAD, UNDECIDED, values
from great_tf.evidence_report import figure_if_any, read_json, read_text
from great_tf.mtl.report import mean_and_std

REGIMES = ("100pct", "5pct")
REGIME_TITLES = {"100pct": "dense (100 %)", "5pct": "sparse (5 %)"}
DISTILL_METHODS = {"great": "GREAT", "distill": "Hinton"}


# -- the tables and the figure -----------------------------------------------------------------------

def sweep_section(root):
    """The sweeps' own tables, as they wrote them (the defense frontier, the distillation trials)."""
    found = sorted(glob.glob(os.path.join(root, "tuning", "*", "*", "sweep_*.md"))
                   + glob.glob(os.path.join(evidence.sweep_dir(root), "sweep_*.md")))
    if not found:
        return ["No sweep has finished yet.", ""]
    return [line for path in found for line in (sweep_text(path), "")]


def sweep_text(path):
    """One table a sweep wrote, its headings one level down; a distillation sweep's first heading
    names its regime (the dense and sparse sweeps write tables of the same titles)."""
    text = "\n".join("#" + line if line.startswith("## ") else line for line in read_text(path).split("\n"))
    regime = re.search(r"_(\d+pct)(?:_trials)?\.md$", path)
    if text.startswith("### ") and regime and regime.group(1) in REGIME_TITLES:
        first, _, rest = text.partition("\n")
        text = f"{first}: {REGIME_TITLES[regime.group(1)]}\n{rest}"
    return text


def sweep_lines(rows):
    """{line label: (alphas, validation %)} of one regime's trials: one line per distillation
    temperature, one for GREAT, one for Sobolev."""
    names = {"great": "GREAT", "sobolev": "Sobolev"}
    lines = {}
    for row in sorted(rows, key=lambda r: r["alpha"]):
        label = (f"Hinton T {row['temperature']:g}" if row["method"] == "distill"
                 else names.get(row["method"], row["method"]))
        alphas, scores = lines.setdefault(label, ([], []))
        alphas.append(row["alpha"])
        scores.append(row["val %"])
    return lines


def sweep_figure(root, figures_dir):
    """docs/figures/distill_sweeps.png: validation accuracy against alpha in each regime, or None
    before a distillation sweep has finished."""
    panels = {REGIME_TITLES[r]: sweep_lines(rows) for r in REGIMES if (rows := sweep_trials(root, r))}
    return figure_if_any(panels, figures_dir, "distill_sweeps.png",
                         "Distillation sweeps: validation accuracy of each setting", "alpha",
                         "validation accuracy %", xscale="log", root=root)


# -- distillation: does a setting carry over to the other regime? ----------------------------------

def sweep_trials(root, regime):
    """The rows of every trial of the distillation sweep of `regime`, or [] before it finished."""
    found = glob.glob(os.path.join(evidence.sweep_dir(root), f"sweep_*_{regime}_trials.json"))
    return read_json(found[0])["rows"] if found else []


def setting(row):
    """The hyperparameters of a trial row, as a hashable key."""
    return tuple(sorted((k, float(v)) for k, v in row.items()
                        if k not in ("method", "trial", "val %", "test %")))


def transfer_cost(trials_by_regime, method):
    """(mean transfer cost in points, {regime: best setting}), or None if a regime lacks a trial
    of the other's best setting."""
    best, scores = {}, {}
    for regime, rows in trials_by_regime.items():
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            return None
        scores[regime] = {setting(r): r["val %"] for r in mine}
        best[regime] = max(mine, key=lambda r: r["val %"])
    costs = []
    for regime, other in zip(REGIMES, reversed(REGIMES)):
        carried = scores[regime].get(setting(best[other]))
        if carried is None:
            return None
        costs.append(best[regime]["val %"] - carried)
    return sum(costs) / len(costs), {r: setting(best[r]) for r in REGIMES}


def seed_noise(distill_rows, method):
    """Twice the method's seed std of test accuracy, averaged over the regimes (None below 2 seeds)."""
    stds = [mean_and_std(values(distill_rows, method, "test accuracy", regime=r))[1] for r in REGIMES]
    if any(s is None for s in stds):
        return None
    return 2 * sum(stds) / len(stds)


def setting_text(key):
    return ", ".join(f"{k} {v:g}" for k, v in key)


def distill_transfer_claim(root, distill_rows):
    trials = {r: sweep_trials(root, r) for r in REGIMES}
    claim = ("Table 3 / Sec. 3.2: GREAT's single alpha carries over to the other regime; "
             "distillation's T and alpha must be searched again")
    paper = "GREAT alpha 0.1 in both regimes; distillation alpha 0.1 (dense) vs 0.99 (sparse)"
    measured, transfers = [], {}
    for method, label in DISTILL_METHODS.items():
        cost, noise = transfer_cost(trials, method), seed_noise(distill_rows, method)
        if cost is None or noise is None:
            return claim, paper, f"{label}: sweeps or seeds not finished", UNDECIDED
        mean_cost, best = cost
        transfers[method] = mean_cost <= noise
        measured.append(f"{label}: best {setting_text(best['100pct'])} (dense), "
                        f"{setting_text(best['5pct'])} (sparse); transfer cost {mean_cost:.2f} "
                        f"points against a noise of {noise:.2f} (2 seed std)")
    result = HOLDS if transfers["great"] and not transfers["distill"] else FAILS
    return claim, paper, "; ".join(measured), result


# -- defense: a robust setting within 2 clean points ----------------------------------------------

def defense_sweep(root, dataset, mode="great+ce"):
    """(trial rows, baseline result) of a finished defense sweep, or (None, None)."""
    folder = evidence.defense_sweep_dir(root, dataset)
    table, base = read_json(os.path.join(folder, f"sweep_{mode}.json")), read_json(
        os.path.join(folder, "baseline", "result.json"))
    if table is None or base is None:
        return None, None
    return table["rows"], base


def robust_setting_claim(root, dataset):
    claim = (f"Sec. 3.1: some alpha_max, beta_max make GRE(AT+CE) more robust (AA) than the "
             f"baseline within 2 clean points [{dataset} sweep]")
    paper = "not measured (one setting per data set)"
    rows, base = defense_sweep(root, dataset)
    if rows is None:
        return claim, paper, "sweep not finished", UNDECIDED
    feasible = [r for r in rows if r["feasible"]]
    base_aa, attacked = base["val AA %"], base["attacked images"]
    if not feasible:
        return (claim, paper, f"no trial of {len(rows)} within 2 clean points of the baseline's "
                f"{base['val clean %']:.2f} %", FAILS)
    best = max(feasible, key=lambda r: r["val AA %"])
    gain = best["val AA %"] - base_aa
    p, q = best["val AA %"] / 100, base_aa / 100
    noise = 2 * 100 * math.sqrt((p * (1 - p) + q * (1 - q)) / attacked)
    # Both at one and the same value with no spread (0.00 % each): not more robust (the tie rule).
    tied = gain == 0 and noise == 0
    result = HOLDS if gain > noise else (FAILS if gain < -noise or tied else SPREAD)
    measured = (f"best of {len(feasible)} feasible (of {len(rows)}): alpha_max {best['alpha_max']:g}, "
                f"beta_max {best['beta_max']:g}, AA {best['val AA %']:.2f} % vs baseline {base_aa:.2f} %; "
                f"gain {gain:+.2f}, 2 std errors ({attacked} images) {noise:.2f}")
    return claim, paper, measured, result


def sweep_claims(root, distill_rows):
    return [distill_transfer_claim(root, distill_rows), robust_setting_claim(root, "mnist")]
