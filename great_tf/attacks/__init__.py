"""Adversarial attacks for evaluating defenses, usable on any Keras classifier
(docs/design.md#attacks).

Signatures follow cleverhans' TF2 functions: `attack(model_fn, x, eps, ..., y=None,
targeted=False, clip_min=0.0, clip_max=1.0)` where `model_fn` maps a batch of inputs to logits
(a Keras model works as is; it runs in inference mode; probabilities are refused in one line),
and a custom loss is `loss_fn(labels, logits)`. Where cleverhans has `norm` (`fgsm(model_fn, x,
eps, norm)`, `iterative_fgsm` and `pgd` after `nb_iter`) it is there too, np.inf by default: the
attacks are L-inf, another norm is an error. Accuracies (`accuracy`, and every accuracy the
library returns) are in percent, 0-100. With `y=None` a non-targeted attack uses the model's own prediction as
the label to move away from (no label leaking); a targeted attack needs `y`, the target classes.

Pixel scale: `eps`, `eps_iter`, `clip_min` and `clip_max` are in the units of the model's input,
and the input must lie in [clip_min, clip_max]. Every great_tf data set yields images in [0, 1],
so eps = 0.1 means 0.1 of the full pixel range (25.5 on the 0-255 scale).

Every attack runs one batch compiled (`tf.function`, its iterations a `tf.while_loop`); `batched`
runs an attack over arrays of any size, with results that do not depend on the batch size.

One attack per module:

- `fgsm`: x + eps * sign(grad) (targeted: x - eps * sign(grad of the target's loss)), clipped.
- `iterative_fgsm` (BIM, Kurakin et al. 2017): k signed steps of `eps_iter`, each projected onto
  the eps-ball around x and the pixel range; `rand_init` starts from a uniform point of the ball.
- `pgd` (Madry et al. 2018): iterative FGSM from random starts, keeping per example a restart that
  succeeded, the loss breaking ties.
- `spsa` (Uesato et al. 2018): gradient-free, a finite-difference estimate of the margin loss's
  gradient along random sign directions.
- `apgd` (Croce & Hein 2020): Auto-PGD with its step-size schedule and momentum; `loss="dlr"`,
  and `targeted=True` for APGD-T over the top classes.
- `square` (Andriushchenko et al. 2020): gradient-free random search on the margin loss.
- `fab` (Croce & Hein 2020): FAB-T, the targeted minimum-norm boundary attack of AutoAttack.
- `autoattack`: the standard AutoAttack, APGD-CE, APGD-T, FAB-T and Square, each on the examples
  still correct (`version="lite"`: without FAB-T).

The gradient attacks take `loss="ce" | "margin" | "dlr"`: cross-entropy saturates on confident
models (exactly zero input gradients), the margin and DLR losses do not.
"""

from great_tf.attacks.apgd import apgd, checkpoint_schedule
from great_tf.attacks.autoattack import autoattack
from great_tf.attacks.fab import fab
from great_tf.attacks.fgsm import fgsm
from great_tf.attacks.iterative_fgsm import iterative_fgsm
from great_tf.attacks.pgd import pgd
from great_tf.attacks.spsa import spsa
from great_tf.attacks.square import p_schedule, square, square_sizes
from great_tf.attacks.utils import (FLOAT16_LOSS_SCALE, LOSSES, accuracy, batched, ce_loss,
                                    check_logits, correct, default_eps_iter, dlr_loss,
                                    least_likely_labels, margin_loss,
                                    predict_labels, predicted_labels, random_wrong_labels,
                                    targeted_dlr_loss)

__all__ = ["apgd", "autoattack", "fab", "fgsm", "iterative_fgsm", "pgd", "spsa", "square", "batched",
           "accuracy", "correct", "predict_labels", "predicted_labels", "least_likely_labels",
           "random_wrong_labels", "default_eps_iter", "ce_loss", "margin_loss", "dlr_loss",
           "targeted_dlr_loss", "LOSSES", "FLOAT16_LOSS_SCALE", "checkpoint_schedule", "p_schedule",
           "square_sizes", "check_logits"]
