"""Fast gradient sign method (Goodfellow et al. 2015; docs/design.md#attacks)."""

import numpy as np
import tensorflow as tf

from great_tf.attacks.utils import (as_input, attack_labels, check_eps, check_norm,
                                    compiled_per_model, direction, resolve_loss, signed_gradient)


@compiled_per_model
def _fgsm(model_fn, x, labels, eps, sign, clip_min, clip_max, loss_fn):
    step = sign * eps * signed_gradient(model_fn, x, labels, loss_fn)
    return tf.clip_by_value(x + step, clip_min, clip_max)


def fgsm(model_fn, x, eps, norm=np.inf, y=None, targeted=False, clip_min=0.0, clip_max=1.0,
         loss_fn=None, loss="ce"):
    """clip(x + eps * sign(grad_x loss(y, model_fn(x)))); targeted: x - eps * sign(grad of the
    target's loss). `norm`: np.inf only (cleverhans' position). `loss` is "ce", "margin" or
    "dlr"; `loss_fn(labels, logits)` any other loss."""
    check_norm(norm)
    check_eps(eps, clip_min, clip_max)
    x = as_input(x, clip_min, clip_max)
    labels = attack_labels(model_fn, x, y, targeted)
    return _fgsm(model_fn, x, labels, tf.constant(eps, tf.float32), direction(targeted),
                 tf.constant(clip_min, tf.float32), tf.constant(clip_max, tf.float32),
                 resolve_loss(loss, loss_fn))
