"""Gradient-masking diagnostics: does a model's robustness come from masked gradients?
(docs/design.md#robustness)

A defense that masks or obfuscates its gradient (Athalye et al. 2018) looks robust to gradient
attacks without being robust. Carlini et al. 2019 ("On Evaluating Adversarial Robustness") list
the symptoms; `masking_diagnostics` measures each and returns one finding per check:

- `iterative-vs-single-step`: iterative attacks (iFGSM, PGD, APGD) must be at least as strong
  as one FGSM step, which they contain.
- `accuracy-vs-eps`: accuracy under an iterative attack must not rise with eps.
- `single-step-above-clean`: one FGSM step must not raise accuracy above the clean one. If it
  does, the model reads the label off the perturbation (label leaking, Kurakin et al. 2017) or
  has learnt to defeat that one step, the signature of FGSM adversarial training: its FGSM
  column says nothing about robustness. A single-step curve may dip and rise again on an
  undefended model (large steps overshoot), so only rising above clean accuracy is flagged.
- `unbounded-attack`: with eps = the whole pixel range an attack can reach any image, so accuracy
  must go to about 0.
- `gradient-free-vs-white-box` and `transfer-vs-white-box`: attacks that do not use the model's
  gradient (Square, SPSA, a transfer attack crafted on another model) must not be stronger than
  the white-box ones.
- `zero-gradients`: the share of examples whose input gradient is exactly zero or not finite
  (zero cross-entropy gradients with non-zero margin gradients: the softmax saturates).
- `outputs-are-finite`: nan or inf outputs (a diverged model) make every other number meaningless.
- `outputs-are-logits`: attacks and the cross-entropy expect logits; probabilities flatten the loss.

A finding is a dict {"check", "flagged", "evidence"}, the evidence one sentence with the numbers.
Differences smaller than `tolerance(n)` (1 point, or 2 examples out of n if that is more) are
treated as noise. `format_findings` turns the list into the lines printed under every
robustness table.
"""

import numpy as np
import tensorflow as tf

from great_tf import attacks
from great_tf.contracts import are_probabilities
from great_tf.attacks.utils import (as_input, as_labels, ce_loss, compiled_per_model, loss_gradient,
                                    margin_loss)

WHITE_BOX = ("FGSM", "iFGSM", "PGD", "APGD-CE", "APGD-T")
ITERATIVE = ("iFGSM", "PGD", "APGD-CE", "APGD-T")
SINGLE_STEP = ("FGSM",)
GRADIENT_FREE = ("Square", "SPSA")
TRANSFER = ("Transfer iFGSM",)
UNBOUNDED_LIMIT = 5.0  # % accuracy an attack with eps = the whole pixel range may leave
ZERO_GRADIENT_LIMIT = 1.0  # % of examples with a zero or non-finite input gradient


def tolerance(n):
    """Accuracy differences (in points) treated as noise on n examples: 1 point or 2 examples."""
    return max(1.0, 200.0 / max(n, 1))


def finding(check, flagged, evidence):
    return {"check": check, "flagged": bool(flagged), "evidence": evidence}


def masking_diagnostics(model_fn, x, y, eps, clip_min=0.0, clip_max=1.0, measured=None, curves=None,
                        nb_iter=20, nb_queries=500, eps_factors=(0.25, 0.5, 1.0, 2.0), seed=0,
                        batch_size=256):
    """The findings of every check on (x, y) at `eps` (in the units of x); only the
    `outputs-are-logits` finding when `model_fn` gives probabilities, which the attacks refuse.

    `measured` ({attack name: accuracy %} on the same x, y and eps, e.g. a robustness table's
    row) and `curves` ({attack: (eps values, accuracies)}; the iterative and FGSM ones are used)
    are reused instead of attacking again; attacks that are missing run here: FGSM, iFGSM (10
    steps), APGD-CE (`nb_iter`), Square (`nb_queries`), and iFGSM and FGSM at eps times
    `eps_factors` for the curves. A transfer attack is compared only if `measured` has one.
    """
    x = as_input(x, clip_min, clip_max).numpy()
    y = as_labels(y, x).numpy()
    outputs = model_outputs(model_fn, x, batch_size)
    finite, logits = check_outputs_are_finite(outputs), check_outputs_are_logits(outputs)
    if logits["flagged"]:
        return [logits]  # the attacks refuse probabilities: no other check can run
    accuracy = {k: v for k, v in (measured or {}).items() if v is not None}
    common = {"clip_min": clip_min, "clip_max": clip_max, "batch_size": batch_size}

    def attacked(attack, e=eps, **kwargs):
        x_adv = attacks.batched(attack, model_fn, x, y, eps=e, **common, **kwargs)
        return attacks.accuracy(model_fn, x_adv, y)

    runs = {"FGSM": lambda: attacked(attacks.fgsm),
            "iFGSM": lambda: attacked(attacks.iterative_fgsm),
            "APGD-CE": lambda: attacked(attacks.apgd, nb_iter=nb_iter, seed=seed),
            "Square": lambda: attacked(attacks.square, nb_queries=nb_queries, seed=seed)}
    for name, run in runs.items():
        if name not in accuracy and (name != "Square" or x.ndim == 4):
            accuracy[name] = run()
    curves = dict(curves or {})
    grid = [eps * f for f in eps_factors]
    if not any(name in curves for name in ITERATIVE):
        curves["iFGSM"] = (grid, [attacked(attacks.iterative_fgsm, e) for e in grid])
    if not any(name in curves for name in SINGLE_STEP):
        curves["FGSM"] = (grid, [attacked(attacks.fgsm, e) for e in grid])
    clean = attacks.accuracy(model_fn, x, y, batch_size)
    tol = tolerance(len(x))
    return [
        check_iterative_vs_single_step(accuracy, tol),
        check_accuracy_vs_eps({k: v for k, v in curves.items() if k in ITERATIVE}, tol),
        check_single_step_above_clean({k: v for k, v in curves.items() if k in SINGLE_STEP}, clean, tol),
        check_unbounded_attack(model_fn, x, y, clip_min, clip_max, nb_iter, seed, batch_size),
        check_weaker_than_white_box("gradient-free-vs-white-box", GRADIENT_FREE, accuracy, tol),
        check_weaker_than_white_box("transfer-vs-white-box", TRANSFER, accuracy, tol),
        check_zero_gradients(model_fn, x, y, batch_size),
        finite,
        logits,
    ]


def _listed(accuracy, names):
    return ", ".join(f"{n} {accuracy[n]:.1f} %" for n in names)


def check_iterative_vs_single_step(accuracy, tol):
    iterative = [n for n in ITERATIVE if n in accuracy]
    if "FGSM" not in accuracy or not iterative:
        return finding("iterative-vs-single-step", False, "not run: needs FGSM and an iterative attack.")
    weaker = [n for n in iterative if accuracy[n] > accuracy["FGSM"] + tol]
    if weaker:
        return finding("iterative-vs-single-step", True,
                       f"{_listed(accuracy, weaker)} accuracy against FGSM {accuracy['FGSM']:.1f} %: "
                       f"iterative attacks should be at least as strong as their first step.")
    return finding("iterative-vs-single-step", False,
                   f"{_listed(accuracy, iterative)} <= FGSM {accuracy['FGSM']:.1f} % (+{tol:.1f} noise).")


def check_accuracy_vs_eps(curves, tol):
    rises = []
    for attack, (grid, values) in (curves or {}).items():
        running_min = np.minimum.accumulate(np.asarray(values, np.float64))
        for i in range(1, len(values)):
            if values[i] > running_min[i - 1] + tol:
                rises.append(f"{attack} {running_min[i - 1]:.1f} % -> {values[i]:.1f} % at eps {grid[i]:.4g}")
    if not curves:
        return finding("accuracy-vs-eps", False, "not run: no accuracy-against-eps curve.")
    if rises:
        return finding("accuracy-vs-eps", True, "accuracy rises with eps: " + "; ".join(rises) + ".")
    shown = "; ".join(f"{a} " + " / ".join(f"{v:.1f}" for v in vals) + " % at eps "
                      + " / ".join(f"{e:.3g}" for e in grid) for a, (grid, vals) in curves.items())
    return finding("accuracy-vs-eps", False, f"accuracy does not rise with eps: {shown}.")


def check_single_step_above_clean(curves, clean, tol):
    """`curves`: {single-step attack: (eps values, accuracies %)}; `clean`: accuracy % on the
    same examples without attack."""
    above = [f"{attack} {value:.1f} % at eps {e:.4g}" for attack, (grid, values) in curves.items()
             for e, value in zip(grid, values) if e > 0 and value > clean + tol]
    if not curves:
        return finding("single-step-above-clean", False, "not run: no FGSM curve.")
    if above:
        return finding("single-step-above-clean", True,
                       f"{', '.join(above)} against {clean:.1f} % clean: the step helps the model "
                       f"(label leaking, or a model trained to defeat FGSM); its FGSM accuracy is "
                       f"no measure of robustness.")
    highest = max(v for _, (grid, values) in curves.items() for e, v in zip(grid, values) if e > 0)
    return finding("single-step-above-clean", False,
                   f"FGSM reaches at most {highest:.1f} % along eps, not above {clean:.1f} % clean "
                   f"(+{tol:.1f} noise).")


def check_unbounded_attack(model_fn, x, y, clip_min, clip_max, nb_iter, seed, batch_size):
    """APGD on the margin loss (it does not saturate) with eps = the whole pixel range."""
    eps = clip_max - clip_min
    x_adv = attacks.batched(attacks.apgd, model_fn, x, y, eps=eps, nb_iter=nb_iter, loss="margin",
                            clip_min=clip_min, clip_max=clip_max, seed=seed, batch_size=batch_size)
    left = attacks.accuracy(model_fn, x_adv, y)
    return finding("unbounded-attack", left > UNBOUNDED_LIMIT,
                   f"APGD (margin loss, {nb_iter} iterations) with eps = the whole pixel range "
                   f"({eps:g}) leaves {left:.1f} % accuracy (expected about 0, flagged above "
                   f"{UNBOUNDED_LIMIT:g} %).")


def check_weaker_than_white_box(check, names, accuracy, tol):
    present = [n for n in names if n in accuracy]
    white = [n for n in WHITE_BOX if n in accuracy]
    if not present or not white:
        return finding(check, False, f"not run: needs {' or '.join(names)} and a white-box attack.")
    best = min(white, key=accuracy.get)
    stronger = [n for n in present if accuracy[n] < accuracy[best] - tol]
    if stronger:
        return finding(check, True, f"{_listed(accuracy, stronger)} against the strongest white-box "
                       f"attack, {best} {accuracy[best]:.1f} %: the model's gradient misleads the "
                       f"white-box attacks.")
    return finding(check, False, f"{_listed(accuracy, present)} >= the strongest white-box attack, "
                   f"{best} {accuracy[best]:.1f} % (-{tol:.1f} noise).")


@compiled_per_model
def _gradient_status(model_fn, x, labels):
    """Per example and loss (cross-entropy, margin): input gradient all zero; not finite. [2, 2, B]"""
    status = []
    for loss_fn in (ce_loss, margin_loss):
        grad, _, _ = loss_gradient(model_fn, x, lambda logits, f=loss_fn: f(labels, logits))
        flat = tf.reshape(grad, [tf.shape(grad)[0], -1])
        status.append([tf.reduce_all(flat == 0.0, axis=1), ~tf.reduce_all(tf.math.is_finite(flat), axis=1)])
    return tf.cast(tf.stack(status), tf.int32)


def check_zero_gradients(model_fn, x, y, batch_size=256):
    n = len(x)
    counts = sum(np.sum(_gradient_status(model_fn, tf.constant(x[s:s + batch_size]),
                                         tf.constant(y[s:s + batch_size], tf.int32)).numpy(), axis=-1)
                 for s in range(0, n, batch_size))
    (ce_zero, ce_bad), (margin_zero, margin_bad) = counts.tolist()
    share = 100.0 * max(ce_zero + ce_bad, margin_zero + margin_bad) / n
    evidence = (f"{ce_zero} of {n} examples have an all-zero cross-entropy input gradient and "
                f"{ce_bad} a non-finite one; with the margin loss {margin_zero} and {margin_bad}")
    if ce_zero > margin_zero:
        evidence += ": the softmax saturates, attack with loss='margin' or 'dlr' (APGD-T uses DLR)"
    elif margin_zero + margin_bad:
        evidence += ": the model gives no usable gradient there"
    return finding("zero-gradients", share > ZERO_GRADIENT_LIMIT,
                   evidence + f" (flagged above {ZERO_GRADIENT_LIMIT:g} % of examples).")


def model_outputs(model_fn, x, batch_size=256):
    """The model's outputs on `x`, float64 [n, classes]."""
    return np.concatenate([np.asarray(model_fn(tf.constant(x[s:s + batch_size])), np.float64)
                           for s in range(0, len(x), batch_size)])


def check_outputs_are_finite(outputs):
    """nan or inf outputs (a diverged training, an overflow) make every attack's number
    meaningless: an argmax over nan is class 0, a gradient through it nan."""
    bad = int(np.sum(~np.all(np.isfinite(outputs), axis=1)))
    if bad:
        return finding("outputs-are-finite", True,
                       f"{bad} of {len(outputs)} examples have nan or inf outputs: the model is "
                       f"broken (a diverged training?) and no accuracy here measures robustness.")
    return finding("outputs-are-finite", False, f"every output of the {len(outputs)} examples is finite.")


def check_outputs_are_logits(outputs):
    """Probabilities instead of logits flatten the loss; judged on the examples with finite
    outputs only (non-finite ones are `check_outputs_are_finite`'s)."""
    outputs = outputs[np.all(np.isfinite(outputs), axis=1)]
    if not len(outputs):
        return finding("outputs-are-logits", False, "not run: no example has finite outputs.")
    sums = outputs.sum(axis=1)
    if are_probabilities(outputs):
        return finding("outputs-are-logits", True,
                       "the outputs are all in [0, 1] and every row sums to 1: they are probabilities, "
                       "not logits; attack (and train with from_logits) on the logits.")
    return finding("outputs-are-logits", False,
                   f"the outputs range over [{outputs.min():.3g}, {outputs.max():.3g}] and rows sum to "
                   f"{sums.min():.3g} .. {sums.max():.3g}: logits, not probabilities.")


def masking_suspected(findings):
    return any(f["flagged"] for f in findings)


def format_findings(findings, name=None):
    """The lines printed under a robustness table: a verdict, then every check's evidence."""
    fired = [f for f in findings if f["flagged"]]
    who = f"{name}: " if name else ""
    if fired:
        head = (f"{who}gradient masking suspected ({len(fired)} of {len(findings)} checks fired: "
                + ", ".join(f["check"] for f in fired) + ").")
    else:
        head = f"{who}no gradient-masking check fired ({len(findings)} checks)."
    lines = [head] + [f"  [{'FIRED' if f['flagged'] else 'ok'}] {f['check']}: {f['evidence']}"
                      for f in findings]
    return "\n".join(lines)
