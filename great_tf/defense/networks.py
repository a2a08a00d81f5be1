"""The paper's defense networks and settings (docs/design.md#defense)."""

from great_tf.data.classification import KNOWN_SETTINGS
from great_tf.defense.base import GreatDefense, mode_class
from great_tf.schedules import PolyRamp, adam, paper_schedules

# The paper's beta_max per data set (Sec. 3.1); mnist is our choice (digits, like SVHN). Any other
# data set: `great_tf.data.classification.classification_info(name).beta_max`.
BETA_MAX = {name: settings.beta_max for name, settings in KNOWN_SETTINGS.items()}
ALPHA_MAX = 1.0
FGSM_TRAIN_EPS = 0.2  # the supplement's FGSM adversarial training, on the [0, 1] pixel scale


def build_networks(input_shape, num_classes, width=64):
    """The paper's pair: ResNet-18 main network, ResNet-18 with LeakyReLU(0.2) auxiliary.

    The auxiliary reads input gradients, which have the input's shape.
    """
    from great_tf.models import resnet18

    main = resnet18(input_shape, num_classes, width, act="relu", name="main")
    aux = resnet18(input_shape, num_classes, width, act="leaky_relu", name="auxiliary")
    return main, aux


def build_defense(mode, input_shape, num_classes, width=64, steps_per_epoch=None, epochs=None,
                  alpha_max=ALPHA_MAX, beta_max=BETA_MAX["cifar10"], learning_rate=1e-3,
                  fgsm_eps=FGSM_TRAIN_EPS, clip_min=0.0, clip_max=1.0):
    """A compiled `GreatDefense` of the paper's networks, both trained by Adam at `learning_rate`.

    With `steps_per_epoch` and `epochs` (the run's length), the paper's schedules: the learning
    rate times the poly multiplier m = (1 - epoch/epochs)^0.9, alpha = alpha_max * (1 - m) and
    beta = beta_max * (1 - m), so alpha and beta are 0 during the first epoch (a one-epoch run
    is the baseline; `fit` warns) and the learning rate is 0 after `epochs` (`fit` refuses to
    run past it). Without them: a constant learning rate and alpha = alpha_max, beta = beta_max
    from the first step, for as long as `fit` runs.

    Build it inside `strategy.scope()` to train under a distribution strategy.
    """
    scheduled = paper_schedules(steps_per_epoch, epochs)
    needs_auxiliary = mode_class(mode).needs_auxiliary
    main, aux = build_networks(input_shape, num_classes, width)

    def weight(max_value):
        return PolyRamp(max_value, steps_per_epoch, epochs) if scheduled else float(max_value)

    model = GreatDefense(
        main, aux if needs_auxiliary else None, mode, alpha=weight(alpha_max), beta=weight(beta_max),
        fgsm_eps=fgsm_eps, clip_min=clip_min, clip_max=clip_max,
        name=f"defense_{mode.replace('+', '_')}")
    optimizers = {name: adam(learning_rate, steps_per_epoch, epochs)
                  for name in ("optimizer", *model.optimizer_variables())}
    model.compile(**optimizers)
    return model
