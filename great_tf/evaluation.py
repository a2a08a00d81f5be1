"""The robustness protocol: the paper's Table-1 columns, stronger attacks, the obfuscation checks,
accuracy-against-eps curves and the gradient-masking findings (docs/design.md#robustness).

Each table column is ONE registration: a name, the groups it belongs to, a note for the table,
and a function of the `Evaluation` returning the accuracy (%) or, for an attack on the attack
subset, each example's "still correct" flag (cached, so an ensemble reuses its components):

    @register_column("My attack", groups=("strong",), note="My attack: what it does.")
    def _my_attack(ev):
        return ev.outcome("My attack", my_attack, eps=ev.settings.eps)

Groups: "paper" (the paper's Table 1), "strong" (APGD-CE, APGD-T, Square, AutoAttack without
FAB-T and the standard AutoAttack) and "all" (every column, including PGD with restarts, a
transfer attack and SPSA). Columns appear in the order they are registered.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from great_tf import attacks
from great_tf.attacks.autoattack import STANDARD_BUDGET, components as aa_components, robust_after
from great_tf.errors import GreatError

GROUPS = ("paper", "strong", "all")
TRAIN_EXAMPLES = 5000  # the Train column's accuracy is on the first this many training images
DIAGNOSTIC_ITERATIONS, DIAGNOSTIC_QUERIES = 20, 500  # budget caps of the masking checks' own attacks
PUBLISHED_BUDGET = STANDARD_BUDGET  # AutoAttack's standard budgets (Croce & Hein 2020)
PAPER_TABLE1 = {  # CIFAR-10, eps = 0.1: the paper's Table 1 in the order of column_names("paper").
    "baseline": (99.97, 93.32, 32.75, 1.99, 72.89, 10.43, 89.59, 18.29),
    "adversarial": (99.97, 89.91, 56.88, 16.73, 82.07, 45.26, 89.81, 69.89),
    "greace": (92.56, 89.84, 77.90, 72.40, 83.39, 66.23, 87.13, 79.10),
    "great": (99.53, 91.95, 47.51, 15.45, 72.73, 12.78, 89.62, 21.95),
    "great+ce": (90.87, 89.97, 81.28, 77.04, 84.53, 73.52, 88.57, 82.38),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Attack settings, every eps in the units of the model's input."""
    eps: float
    eps_iter: Optional[float] = None  # iFGSM/PGD/SPSA step (default 2.5 * eps / iterations)
    iterations: int = 10  # iFGSM, PGD and SPSA steps
    restarts: int = 2  # PGD random restarts
    spsa_samples: int = 32
    spsa_limit: Optional[int] = None  # SPSA on the first N attacked examples only
    apgd_iterations: int = PUBLISHED_BUDGET["apgd_iterations"]
    apgd_restarts: int = PUBLISHED_BUDGET["apgd_restarts"]
    apgd_targets: int = PUBLISHED_BUDGET["apgd_targets"]
    fab_iterations: int = PUBLISHED_BUDGET["fab_iterations"]
    fab_targets: int = PUBLISHED_BUDGET["fab_targets"]
    square_queries: int = PUBLISHED_BUDGET["square_queries"]
    eps_grid: tuple = ()
    seed: int = 0
    clip_min: float = 0.0
    clip_max: float = 1.0
    batch_size: int = 256


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    run: Callable
    groups: tuple
    note: object = None  # a sentence, or a function of (Settings, Evaluation or None) giving one


COLUMNS = {}
CURVES = {}


def _check_groups(groups):
    unknown = set(groups) - {"paper", "strong"}
    if unknown:
        raise GreatError(f"unknown column group(s) {sorted(unknown)}: use 'paper' or 'strong' "
                         f"(every column is in 'all')")


def register_column(name, groups=(), note=None):
    """Registers `run(evaluation)` as the table column `name` (see the module docstring)."""
    _check_groups(groups)

    def decorate(run):
        if name in COLUMNS:
            raise GreatError(f"a column named {name!r} is registered already")
        COLUMNS[name] = Column(name, run, tuple(groups), note)
        return run
    return decorate


def register_curve(name, groups=()):
    """Registers `run(evaluation, eps) -> accuracy %` as a curve of the accuracy-against-eps plot."""
    _check_groups(groups)

    def decorate(run):
        if name in CURVES:
            raise GreatError(f"a curve named {name!r} is registered already")
        CURVES[name] = Column(name, run, tuple(groups))
        return run
    return decorate


def check_group(group):
    if group not in GROUPS:
        raise GreatError(f"unknown attack group {group!r}: use one of {', '.join(GROUPS)}")
    return group


def column_names(group="all"):
    """The table's columns for `group`, in registration order."""
    check_group(group)
    return [n for n, c in COLUMNS.items() if group == "all" or group in c.groups]


def curve_names(group="all"):
    check_group(group)
    return [n for n, c in CURVES.items() if group == "all" or group in c.groups]


class Evaluation:
    """One model under attack: its data, the settings, and every attack's per-example outcome.

    `x, y` are the attacked examples (the first `attack_limit` test examples); `outcomes[name]`
    says per example whether the model still classifies it correctly after attack `name`.
    """

    def __init__(self, model, train, test, settings, surrogate=None, attack_limit=None, num_classes=None):
        self.model, self.train, self.test = model, train, test
        self.settings, self.surrogate = settings, surrogate
        n = len(test[0]) if attack_limit is None else min(attack_limit, len(test[0]))
        self.x, self.y = np.asarray(test[0][:n]), np.asarray(test[1][:n])
        self.num_classes = num_classes or int(np.shape(model(self.x[:1]))[-1])
        self.outcomes = {}
        self._targets = {}

    def craft(self, attack, labels=None, model=None, x=None, example_ids=None, batch_size=None, **kwargs):
        """Adversarial examples of `attack` on `x` (default: the attacked examples), crafted with
        `model` (default: the evaluated one) against `labels` (default: the true labels)."""
        s = self.settings
        x = self.x if x is None else x
        labels = self.y[:len(x)] if labels is None else labels
        return attacks.batched(attack, self.model if model is None else model, x, labels,
                               batch_size=batch_size or s.batch_size, example_ids=example_ids,
                               clip_min=s.clip_min, clip_max=s.clip_max, **kwargs)

    def outcome(self, name, attack, limit=None, labels=None, **kwargs):
        """Per example (of the first `limit` attacked ones): still correct after `attack`. Cached."""
        if name not in self.outcomes:
            x, y = self.x[:limit], self.y[:limit]
            labels = None if labels is None else labels[:limit]
            x_adv = self.craft(attack, x=x, labels=labels, **kwargs)
            self.outcomes[name] = attacks.correct(self.model, x_adv, y, self.settings.batch_size)
        return self.outcomes[name]

    def targets(self, kind):
        """The paper's targets: "worst" (least probable class) or "random" (a random wrong class)."""
        if kind not in self._targets:
            self._targets[kind] = (
                attacks.least_likely_labels(self.model, self.x, self.settings.batch_size).numpy()
                if kind == "worst" else
                attacks.random_wrong_labels(self.y, self.num_classes, self.settings.seed).numpy())
        return self._targets[kind]

    def iterative(self, **kwargs):
        s = self.settings
        return {"eps": s.eps, "eps_iter": s.eps_iter, "nb_iter": s.iterations, **kwargs}

    def aa_components(self, version="standard"):
        """AutoAttack's attacks of `version` with the settings' budgets: (name, attack, kwargs)."""
        s = self.settings
        budget = {key: getattr(s, key) for key in PUBLISHED_BUDGET}
        return aa_components(version, self.num_classes, s.seed, **budget)

    def aa_component(self, name):
        """(attack, kwargs) of one of AutoAttack's attacks, with the settings' budget."""
        return {n: (attack, kwargs) for n, attack, kwargs in self.aa_components()}[name]

    def aa_outcome(self, name):
        """Per attacked example: still correct after AutoAttack's attack `name`, run on every one."""
        attack, kwargs = self.aa_component(name)
        return self.outcome(name, attack, eps=self.settings.eps, **kwargs)


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


# -- the paper's Table 1 --------------------------------------------------------------------------
@register_column("Train", groups=("paper",),
                 note="Train: accuracy on training images (how many: the settings line).")
def _train(ev):
    return attacks.accuracy(ev.model, *(a[:TRAIN_EXAMPLES] for a in ev.train)) if ev.train else None


@register_column("No attack", groups=("paper", "strong"), note="No attack: every test image evaluated (how many: the settings line).")
def _clean(ev):
    return attacks.accuracy(ev.model, *ev.test)


@register_column("FGSM", groups=("paper",))
def _fgsm(ev):
    return ev.outcome("FGSM", attacks.fgsm, eps=ev.settings.eps)


@register_column("iFGSM", groups=("paper",))
def _ifgsm(ev):
    return ev.outcome("iFGSM", attacks.iterative_fgsm, **ev.iterative())


@register_column("FGSM Worst", groups=("paper",),
                 note="Worst / Random: targeted at the least probable / a random wrong class.")
def _fgsm_worst(ev):
    return ev.outcome("FGSM Worst", attacks.fgsm, labels=ev.targets("worst"), eps=ev.settings.eps,
                      targeted=True)


@register_column("FGSM Random", groups=("paper",))
def _fgsm_random(ev):
    return ev.outcome("FGSM Random", attacks.fgsm, labels=ev.targets("random"), eps=ev.settings.eps,
                      targeted=True)


@register_column("iFGSM Worst", groups=("paper",))
def _ifgsm_worst(ev):
    return ev.outcome("iFGSM Worst", attacks.iterative_fgsm, labels=ev.targets("worst"),
                      **ev.iterative(targeted=True))


@register_column("iFGSM Random", groups=("paper",))
def _ifgsm_random(ev):
    return ev.outcome("iFGSM Random", attacks.iterative_fgsm, labels=ev.targets("random"),
                      **ev.iterative(targeted=True))


# -- obfuscation checks beyond the paper ----------------------------------------------------------
@register_column("PGD", note=lambda s, ev=None: f"PGD: {_count(s.restarts, 'random restart')}, step "
                 "2.5 eps / k unless --eps-iter; per example a restart that fools the model, the loss "
                 "breaking ties.")
def _pgd(ev):
    s = ev.settings
    return ev.outcome("PGD", attacks.pgd, **ev.iterative(restarts=s.restarts, seed=s.seed))


@register_column("Transfer iFGSM", note="Transfer iFGSM: non-targeted iFGSM crafted on the undefended "
                 "baseline model and applied to each model (for baseline itself it is white-box).")
def _transfer(ev):
    if ev.surrogate is None:
        return None
    if "Transfer iFGSM" not in ev.outcomes:
        x_adv = ev.craft(attacks.iterative_fgsm, model=ev.surrogate, **ev.iterative())
        ev.outcomes["Transfer iFGSM"] = attacks.correct(ev.model, x_adv, ev.y, ev.settings.batch_size)
    return ev.outcomes["Transfer iFGSM"]


@register_column("SPSA", note=lambda s, ev=None: f"SPSA: gradient-free, {s.spsa_samples} random "
                 "directions per step"
                 + (f", on the first {s.spsa_limit} attacked images" if s.spsa_limit else "")
                 + ". A defense far more accurate under its own gradient's attacks than under "
                 "Transfer iFGSM or SPSA owes its robustness to gradient obfuscation.")
def _spsa(ev):
    s = ev.settings
    # Each example costs 2 * spsa_samples forward passes per step: smaller batches bound the memory.
    return ev.outcome("SPSA", attacks.spsa, limit=s.spsa_limit, num_samples=s.spsa_samples, seed=s.seed,
                      batch_size=min(50, s.batch_size), **ev.iterative())


# -- strong attacks -------------------------------------------------------------------------------
@register_column("APGD-CE", groups=("strong",), note=lambda s, ev=None: (
    f"APGD-CE / APGD-T: Auto-PGD (Croce & Hein 2020) with {s.apgd_iterations} iterations and "
    f"{_count(s.apgd_restarts, 'restart')}, on the cross-entropy / the targeted DLR loss over the "
    f"{s.apgd_targets if ev is None else min(s.apgd_targets, ev.num_classes - 1)} most likely other "
    f"classes (AutoAttack: 100 iterations, 1 restart, 9 targets)."))
def _apgd_ce(ev):
    return ev.aa_outcome("APGD-CE")


@register_column("APGD-T", groups=("strong",))
def _apgd_t(ev):
    return ev.aa_outcome("APGD-T")


@register_column("Square", groups=("strong",), note=lambda s, ev=None: (
    f"Square: gradient-free random search (Andriushchenko et al. 2020), {s.square_queries} queries "
    f"(AutoAttack: 5000)."))
def _square(ev):
    return ev.aa_outcome("Square")


def _autoattack_outcome(ev, version):
    """AutoAttack's protocol (`robust_after`), reusing the attacks this evaluation already ran on
    every example: each draws an example's noise from its index, so its outcome on a survivor is
    the same."""
    def attack_survivors(name, attack, kwargs, todo):
        x_adv = ev.craft(attack, x=ev.x[todo], labels=ev.y[todo], example_ids=todo, eps=ev.settings.eps,
                         **kwargs)
        return attacks.correct(ev.model, x_adv, ev.y[todo], ev.settings.batch_size)

    measured = {name: flags for name, flags in ev.outcomes.items() if len(flags) == len(ev.y)}
    clean = attacks.correct(ev.model, ev.x, ev.y, ev.settings.batch_size)
    return robust_after(ev.aa_components(version), clean, attack_survivors, measured)


@register_column("AA w/o FAB-T", groups=("strong",), note=(
    "AA w/o FAB-T: AutoAttack without FAB-T: per example the worst case over APGD-CE, APGD-T and "
    "Square, each run on the examples still correctly classified (the column earlier tables called AA)."))
def _autoattack_lite(ev):
    return _autoattack_outcome(ev, "lite")


@register_column("AA", groups=("strong",), note=lambda s, ev=None: (
    f"AA: the standard AutoAttack (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T ({s.fab_iterations} "
    f"iterations, {s.fab_targets if ev is None else min(s.fab_targets, ev.num_classes - 1)} targets; "
    f"AutoAttack: 100 and 9) and Square, in that order, each run on the examples still correctly "
    f"classified."))
def _autoattack(ev):
    return _autoattack_outcome(ev, "standard")


# -- accuracy against eps -------------------------------------------------------------------------
def _on_grid(ev, column, attack, eps, **kwargs):
    """Accuracy under `attack` at `eps`; at eps 0 the clean accuracy of the attacked examples, at
    the table's eps the column's own outcome (the same attack and settings)."""
    if eps == 0:
        return attacks.accuracy(ev.model, ev.x, ev.y, ev.settings.batch_size)
    if eps == ev.settings.eps and column in ev.outcomes and len(ev.outcomes[column]) == len(ev.y):
        return column_accuracy(ev.outcomes[column])
    return attacks.accuracy(ev.model, ev.craft(attack, eps=eps, **kwargs), ev.y, ev.settings.batch_size)


@register_curve("FGSM", groups=("paper",))
def _fgsm_curve(ev, eps):
    return _on_grid(ev, "FGSM", attacks.fgsm, eps)


@register_curve("iFGSM", groups=("paper",))
def _ifgsm_curve(ev, eps):
    s = ev.settings
    return _on_grid(ev, "iFGSM", attacks.iterative_fgsm, eps, eps_iter=s.eps_iter, nb_iter=s.iterations)


@register_curve("APGD-CE", groups=("strong",))
def _apgd_curve(ev, eps):
    attack, kwargs = ev.aa_component("APGD-CE")
    return _on_grid(ev, "APGD-CE", attack, eps, **kwargs)


# -- one model's report ---------------------------------------------------------------------------
@dataclasses.dataclass
class Report:
    row: dict  # column -> accuracy % (None: not available, e.g. no transfer surrogate)
    curves: dict  # attack -> [eps grid, accuracies]
    findings: list  # great_tf.robustness findings
    saliency: Optional[np.ndarray] = None


def column_accuracy(value):
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return 100.0 * float(np.mean(value)) if value.size else None
    return float(value)


def evaluate_model(model, train, test, settings, surrogate=None, group="all", attack_limit=None,
                   num_classes=None, diagnostics=True, saliency_images=3):
    """The robustness table's row of one classifier, its accuracy-against-eps curves, the
    gradient-masking findings and the saliency maps of the first `saliency_images` test images.

    `train`/`test` are (images, labels) arrays; attacks run on the first `attack_limit` test
    images; `surrogate` is the undefended model the transfer attack is crafted on (or None).
    """
    ev = Evaluation(model, train, test, settings, surrogate, attack_limit, num_classes)
    row = {name: column_accuracy(COLUMNS[name].run(ev)) for name in column_names(group)}
    curves = {name: [list(settings.eps_grid), [CURVES[name].run(ev, e) for e in settings.eps_grid]]
              for name in curve_names(group)} if settings.eps_grid else {}
    findings = masking_findings(ev, row, curves) if diagnostics else []
    saliency = None
    if saliency_images:
        from great_tf.gradients import saliency_maps

        saliency = saliency_maps(model, test[0][:saliency_images], test[1][:saliency_images]).numpy()
    return Report(row, curves, findings, saliency)


def masking_findings(ev, row, curves):
    """The masking diagnostics on the attacked examples, reusing the row's attacks and the
    accuracy-against-eps curves."""
    from great_tf.robustness import masking_diagnostics

    s = ev.settings
    measured = {k: v for k, v in row.items() if k in ev.outcomes and len(ev.outcomes[k]) == len(ev.y)}
    # The checks' own attacks (the unbounded one, and APGD-CE / Square when the group has none) use
    # at most the diagnostics' default budget: they look for gross failures, not the last point.
    return masking_diagnostics(ev.model, ev.x, ev.y, s.eps, s.clip_min, s.clip_max, measured=measured,
                               curves=curves, nb_iter=min(s.apgd_iterations, DIAGNOSTIC_ITERATIONS),
                               nb_queries=min(s.square_queries, DIAGNOSTIC_QUERIES), seed=s.seed,
                               batch_size=s.batch_size)


def attack_settings_note(group, settings):
    """One sentence on the iterative attacks' budgets in `group`."""
    parts = []
    if group in ("paper", "all"):
        parts.append(f"iFGSM{', PGD and SPSA' if group == 'all' else ''} use k = {settings.iterations}")
    if group in ("strong", "all"):
        parts.append(f"APGD {settings.apgd_iterations} iterations, FAB-T {settings.fab_iterations}, "
                     f"Square {settings.square_queries} queries")
    return "; ".join(parts) + "."


def column_notes(group, settings, ev=None):
    """The notes of the group's columns, in order (one per column that has one)."""
    notes = []
    for name in column_names(group):
        note = COLUMNS[name].note
        if callable(note):
            note = note(settings, ev)
        if note:
            notes.append(note)
    return notes


def paper_table1_note():
    return ("The paper's Table 1 (ResNet-18 width 64, 100 epochs, 50,000 images, eps 0.1): "
            + "; ".join(f"{m} " + " / ".join(f"{v:g}" for v in vals) for m, vals in PAPER_TABLE1.items())
            + ".")


def write_report(rows, group, stem_dir, title, notes, eps_label, curve_title, images=None,
                 saliency_title=""):
    """The robustness table (robustness.md/.csv/.json with the masking findings under it), the
    accuracy-against-eps plot and the saliency grid, in `stem_dir`. `rows` are dicts with
    "method", the columns, "train s", and optionally "curves", "findings", "saliency". Returns the
    text printed: the table, its notes and the findings."""
    import os

    from great_tf.reporting import plot_accuracy_vs_eps, plot_saliency_grid, write_table
    from great_tf.robustness import format_findings

    stem = os.path.join(stem_dir, "robustness")
    columns = ["method", *column_names(group), "train s"]
    findings = [format_findings(r["findings"], r["method"]) for r in rows if r.get("findings")]
    table_rows = [{k: v for k, v in r.items() if k != "saliency"} for r in rows]
    formats = {c: ".2f" for c in columns[1:-1]}
    text = write_table(table_rows, columns, stem, title=title, notes=[*notes, "", *findings],
                       formats={**formats, "train s": ".1f"})
    curves = {}
    for r in rows:
        for attack, (eps, acc) in (r.get("curves") or {}).items():
            curves.setdefault(f"{attack} (non-targeted)", {})[r["method"]] = (eps, acc)
    written = [f"{stem}.md, .csv and .json"]
    if curves:
        written.append(plot_accuracy_vs_eps(curves, os.path.join(stem_dir, "accuracy_vs_eps.png"),
                                            curve_title, xlabel=eps_label))
    maps = {r["method"]: r["saliency"] for r in rows if r.get("saliency") is not None}
    if maps and images is not None:
        written.append(plot_saliency_grid(images, maps, os.path.join(stem_dir, "saliency.png"),
                                          saliency_title))
    print("\n" + text + f"\n\n(written to {'; '.join(written)})")
    return text
