"""The claims table of docs/results.md: each claim of the paper set against what the evidence
campaign measured (docs/design.md#evidence).

A claim is decided by comparing two methods' seed means against their spread: with d the
difference of the means in the claimed direction and s = sqrt(s_a²/n_a + s_b²/n_b) from the sample
standard deviations, the claim **holds** if d > 2s, **does not hold** if d < -2s, and is
**within the spread** otherwise (Welch's statistic at about the 95 % level for many seeds; with
3 seeds a loose rule, stated as such). Where the paper gives the size of its gap G, a claim whose
interval lies wholly below it (d + 2s < G without d > 2s) also **does not hold**: the gap the paper
reports is excluded at this scale, even where the direction is not. Two methods that gave one
and the same value in every seed (d = 0, s = 0) do not differ: a claim that one is better does
not hold. A claim with fewer than two seeds on either side **cannot be decided yet**.

Claims whose data or scale this machine does not have (SVHN, mini-ImageNet, NYUv2, the
ResNeXt-29 teacher) are listed too, as **cannot be decided here**, with what stands in the way:
the table then holds every claim of the paper, not only those we could test.
"""

import math

from great_tf.mtl.report import DELTA_M, mean_and_std, summarize

HOLDS, FAILS, SPREAD, UNDECIDED = ("holds", "does not hold", "within the spread",
                                   "cannot be decided yet")
OUT_OF_REACH = "cannot be decided here"


# -- the masking findings of a defense row ----------------------------------------------------------

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
    if d < -2 * s or gap_excluded(d, s, paper_gap) or (d == 0 and s == 0):
        return FAILS, d, s  # (the last: every seed of both gave one value, so neither is better)
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
        if result == FAILS and d == 0 and s == 0:
            measured += " (the same in every seed)"
        elif result == FAILS and d >= -2 * s:
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
    return measured, all_of(verdicts)


def all_of(verdicts):
    """A claim made of parts: it does not hold if any part does not (even while others wait for
    seeds), cannot be decided while a part cannot, and holds if every part holds."""
    if FAILS in verdicts:
        return FAILS
    if UNDECIDED in verdicts:
        return UNDECIDED
    return HOLDS if all(v == HOLDS for v in verdicts) else SPREAD


def seed_mean(rows, method, column):
    mean = mean_and_std(values(rows, method, column))[0]
    return float("-inf") if mean is None else mean


# -- the claims --------------------------------------------------------------------------------------

# What each AutoAttack column of the robustness table ran (great_tf.evaluation).
AA_NAMES = {"AA": "the standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square)",
            "AA w/o FAB-T": "AutoAttack without FAB-T (APGD-CE, APGD-T, Square)"}


def autoattack_column(rows):
    """"AA" (the standard AutoAttack) where every run that measured the ensemble without FAB-T
    also measured it; else "AA w/o FAB-T", the one all of them have (runs evaluated before FAB-T
    existed here only have that one, see great_tf.evidence_report.named_autoattack)."""
    lite = [r for r in rows if r.get("AA w/o FAB-T") is not None]
    return "AA" if all(r.get("AA") is not None for r in lite) else "AA w/o FAB-T"


def defense_claims(rows, dataset, paper_source, paper_gaps=True):
    """The paper's defense claims (Table 1 and Sec. 3.1) on one data set's rows at its first eps;
    with `paper_gaps` False (a data set the paper has no numbers for), their direction only."""
    from great_tf.defense import MODES

    modes = list(MODES)
    aa = autoattack_column(rows)

    def gap(paper_better, paper_worse):
        return paper_better - paper_worse if paper_gaps else None

    claims = [
        (f"{paper_source}: GRE(AT+CE) is the best defense against iFGSM",
         "77.04 (next: GREACE 72.40)",
         *with_masking_note(rows, "great+ce",
                            best_of(rows, "iFGSM", modes, "great+ce", paper_gap=gap(77.04, 72.40)))),
        (f"{paper_source}: GREACE alone is robust to iFGSM",
         "72.40 vs baseline 1.99",
         *with_masking_note(rows, "greace",
                            comparison(rows, "iFGSM", "greace", "baseline", paper_gap=gap(72.40, 1.99)))),
        (f"{paper_source}: GREAT alone helps against single-step FGSM",
         "47.51 vs baseline 32.75",
         *with_masking_note(rows, "great",
                            comparison(rows, "FGSM", "great", "baseline", paper_gap=gap(47.51, 32.75)))),
        ("Sec. 3.1: GREAT alone obfuscates gradients (its FGSM gain is gone under iFGSM)",
         "FGSM 47.51, iFGSM 15.45 (baseline 32.75, 1.99)", *masking_claim(rows)),
        (f"{paper_source}: GRE(AT+CE) beats FGSM adversarial training on FGSM",
         "81.28 vs 56.88",
         *with_masking_note(rows, "great+ce",
                            comparison(rows, "FGSM", "great+ce", "adversarial", paper_gap=gap(81.28, 56.88)))),
        (f"{paper_source}: GRE(AT+CE) keeps clean accuracy (paper: 3.35 points below baseline)",
         "89.97 vs 93.32", *clean_cost(rows)),
        (f"{paper_source}: GREACE is a strong regularizer (lower training accuracy)",
         "92.56 vs 99.97", *comparison(rows, "Train", "baseline", "greace", paper_gap=gap(99.97, 92.56))),
        (f"Not in the paper: GRE(AT+CE) stays more robust than the baseline under {AA_NAMES[aa]}",
         "not measured", *comparison(rows, aa, "great+ce", "baseline")),
        (f"Not in the paper: GRE(AT+CE) under {aa} against FGSM adversarial training", "not measured",
         *comparison(rows, aa, "great+ce", "adversarial")),
    ]
    # Without numbers of its own for the data set, the paper column says where its numbers are from.
    return [(f"{c} [{dataset}]", p if paper_gaps or p == "not measured" else f"CIFAR-10: {p}", m, v)
            for c, p, m, v in claims]


def checks_fired(rows, method):
    """{seed: the masking checks that fired for `method` in that seed}."""
    return {r["seed"]: [f["check"] for f in findings_with_single_step_check(r) if f.get("flagged")]
            for r in rows if r.get("method") == method}


def with_masking_note(rows, method, claim):
    """A robustness claim's (measured, verdict) with, when a masking check fired for `method`,
    a note saying so and what AutoAttack (which includes the gradient-free Square) leaves. The verdict
    stays about the claim as the paper states it; the note says whether the accuracy it rests on
    is robustness or an attack that fails to find a gradient."""
    measured, result = claim
    fired = checks_fired(rows, method)
    seeds_fired = [s for s, checks in fired.items() if checks]
    if not seeds_fired:
        return measured, result
    aa = autoattack_column(rows)
    names = sorted({c for s in seeds_fired for c in fired[s]})
    note = (f"; but a masking check fired for {method} in {len(seeds_fired)} of {len(fired)} seed(s) "
            f"({', '.join(names)}), and {method} under {aa} is {summary_text(values(rows, method, aa))}")
    return measured + note, result


def masking_claim(rows, method="great"):
    """The paper reads GREAT's FGSM-but-not-iFGSM robustness as gradient obfuscation. Our masking
    checks (great_tf.robustness) test for it directly: the claim holds if one of them fires for
    GREAT in every seed, does not hold if none fires in any seed, and is within the spread if
    they fire in some seeds only."""
    fired = checks_fired(rows, method)
    seeds_fired = [s for s, checks in fired.items() if checks]
    measured = (f"a masking check fired for {method} in {len(seeds_fired)} of {len(fired)} seed(s)"
                + "".join(f"; seed {s}: {', '.join(fired[s])}" for s in seeds_fired)
                + f"; {method} FGSM {summary_text(values(rows, method, 'FGSM'))}, "
                  f"iFGSM {summary_text(values(rows, method, 'iFGSM'))}")
    if len(fired) < 2:
        return measured, UNDECIDED
    if len(seeds_fired) == len(fired):
        return measured, HOLDS
    return measured, FAILS if not seeds_fired else SPREAD


def digits_claim(rows):
    """Table 2's caption on SVHN, tested on MNIST (digits at SVHN's eps 0.2 and beta_max 10): GREACE
    or GRE(AT+CE), whichever is ahead, is the best defense against iFGSM and against FGSM."""
    from great_tf.defense import MODES

    gradient_modes = ("greace", "great+ce")
    others = [m for m in MODES if m not in gradient_modes]
    results, ahead_modes = [], []
    for column in ("iFGSM", "FGSM"):
        ahead = max(gradient_modes, key=lambda m: seed_mean(rows, m, column))
        measured, result = best_of(rows, column, [ahead, *others], ahead)
        results.append((f"{column}: {measured}", result))
        ahead_modes += [ahead] if ahead not in ahead_modes else []
    claim = "; ".join(m for m, _ in results), all_of([v for _, v in results])
    for mode in ahead_modes:
        claim = with_masking_note(rows, mode, claim)
    return claim


def clean_cost(rows, paper_drop=3.35):
    """Holds if GRE(AT+CE)'s clean accuracy is no more than the paper's drop below the baseline's
    (beyond the spread: the baseline minus the drop is compared with GRE(AT+CE))."""
    a, b = values(rows, "great+ce", "No attack"), values(rows, "baseline", "No attack")
    below = verdict([v - paper_drop for v in b], a)[0]  # more than the drop below, beyond the spread?
    measured = f"great+ce {summary_text(a)} vs baseline {summary_text(b)}"
    return measured, {HOLDS: FAILS, UNDECIDED: UNDECIDED}.get(below, HOLDS)


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
        ("Sec. 3.3: equal weights has the highest RMSE of the four on colour, edges and auto "
         "(classification is antagonistic to them)", "0.131/0.349/0.113 (next 0.116/0.270/0.091)",
         *worst_on_dense_tasks(rows, four, "equal")),
        ("Not in the paper: GREAT against the modern methods (Δm %, rank)", "not measured",
         *rank_text(rows, "great")),
    ]
    return claims


def worst_on_dense_tasks(rows, methods, candidate):
    """"`candidate` has the highest RMSE of `methods` on every dense task", each part decided with
    the paper's lead over the runner-up as its gap (Table 4)."""
    paper_gaps = {"colour RMSE": 0.131 - 0.116, "edge RMSE": 0.349 - 0.270, "auto RMSE": 0.113 - 0.091}
    parts, verdicts = [], []
    for column, gap in paper_gaps.items():
        verdicts.append(best_of(rows, column, methods, candidate, fmt=".4f", paper_gap=gap)[1])
        runner_up = max((m for m in methods if m != candidate), key=lambda m: seed_mean(rows, m, column))
        parts.append(f"{column.split()[0]}: {candidate} {summary_text(values(rows, candidate, column), '.4f')}, "
                     f"highest other {runner_up} {summary_text(values(rows, runner_up, column), '.4f')}")
    return "; ".join(parts), all_of(verdicts)


def on_par(rows, column, candidate, other):
    """"Better or on par": holds unless `other` is better beyond the spread."""
    measured, _ = comparison(rows, column, candidate, other, fmt=".2f")
    other_better = comparison(rows, column, other, candidate)[1]
    return measured, {HOLDS: FAILS, UNDECIDED: UNDECIDED}.get(other_better, HOLDS)


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


def measured_claims(defense, distill_rows, mtl_rows):
    """Every claim decided from the campaign's seeds; `defense` maps a data set to its rows at the
    training eps."""
    claims = defense_claims(defense.get("cifar10", []), "cifar10", "Table 1")
    mnist = defense.get("mnist", [])
    claims += defense_claims(mnist, "mnist", "Table 1's claims on MNIST", paper_gaps=False)
    claims.append(("Table 2's claim on MNIST (digits at SVHN's eps 0.2 and beta_max 10): GREACE or "
                   "GRE(AT+CE) is the best defense against iFGSM and FGSM [mnist]",
                   "SVHN: iFGSM 80.13 / 79.36, FGSM 73.65 / 74.12 (next: adversarial 8.41, 58.70)",
                   *digits_claim(mnist)))
    return claims + distill_claims(distill_rows) + mtl_claims(mtl_rows)


# What stands in the way of the claims we cannot test here (measured where it is a cost).
NOT_HERE = "not on this machine (no data set can be downloaded here)"


def out_of_reach_claims():
    return [
        ("Table 2: GREACE or GRE(AT+CE) is the best defense against iFGSM and FGSM [svhn]",
         "iFGSM 80.13 / 79.36, FGSM 73.65 / 74.12 (next: adversarial 8.41, 58.70)",
         f"SVHN is {NOT_HERE}; its loader is tested on mock data. MNIST stands in (the row above)",
         OUT_OF_REACH),
        ("Table 3: with a ResNet-18 student and a ResNeXt-29 (8x64d) teacher, GREAT is best in the "
         "sparse regime", "67.80 vs distillation 67.69, baseline 66.73",
         "not run: at the paper's widths, `python -m bench.distill --student resnet18 --teacher "
         "resnext29 --width 64 --batch-size 64 --steps 2 --rounds 1` (4 methods, 4 steps each with "
         "the warm-up) did not finish within 15 minutes on these 2 cores; 100 epochs of 50,000 "
         "images are out of reach", OUT_OF_REACH),
        ("Table 3 / Sec. 3.2: on mini-ImageNet (ResNet-18 student, ResNet-152 teacher) GREAT is best "
         "in the sparse regime, and distillation's CIFAR-10 settings do not carry over",
         "64x64: 59.80 / 16.82 vs distillation 51.72 / 16.73; 224x224: 56.31 / 14.02 vs 46.77 / 14.00",
         f"mini-ImageNet is {NOT_HERE}; its loader is tested on a small folder of its layout. "
         "The CIFAR-10 sweeps test the carry-over claim across regimes instead (the sweep row above)",
         OUT_OF_REACH),
        ("Table 4: on NYUv2 GREAT is best on depth and normals and within 0.005 on keypoints",
         "0.779 / 0.167 / 0.382 (next 0.796 / 0.169; best keypoints 0.377)",
         f"NYUv2 is {NOT_HERE}; its loader and the multi-task trainer are tested on mock data. "
         "The paper's room-keypoint labels are not public, so keypoints cannot be tested anywhere",
         OUT_OF_REACH),
    ]


def tally(claims):
    """One line counting the claims by verdict, in the order a reader asks: what holds first."""
    order = [HOLDS, FAILS, SPREAD, UNDECIDED, OUT_OF_REACH]
    verdicts = [v for *_, v in claims]
    order += sorted(set(verdicts) - set(order))
    counts = [f"{v} {verdicts.count(v)}" for v in order if v in verdicts]
    return f"{len(claims)} claims. " + ", ".join(counts) + "."
