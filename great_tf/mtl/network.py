"""Building a multi-task model by method name: on your networks or on the paper's.

`build_method(name, encoder, decoders, tasks, **hyperparameters)` works for every registered
method (`available_methods()`); `build_mtl_model(method, ...)` builds the paper's CIFAR-10
network around it, and `compile_mtl` gives every optimizer the paper's Adam with the poly policy.
"""

import inspect

from great_tf.errors import GreatError
from great_tf.mtl.base import registry
from great_tf.mtl.tasks import CIFAR10_NOISY_TASKS
from great_tf.schedules import poly_adam


def available_methods():
    """The registered multi-task method names, sorted."""
    return tuple(sorted(registry()))


def method_class(name):
    methods = registry()
    if name not in methods:
        raise GreatError(f"unknown method {name!r}: choose one of {', '.join(sorted(methods))}")
    return methods[name]


def build_method(name, encoder, decoders, tasks, **hyperparameters):
    """The `keras.Model` of method `name` over `encoder` and `decoders` ({task name: model}).

    `compile(optimizer=...)` works for every method; a method with variables of its own takes
    their optimizers as further `compile` arguments, Adam by default.
    """
    cls = method_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "encoder", "decoders",
                                                                  "tasks", "kwargs"}
    unknown = sorted(set(hyperparameters) - accepted - {"name"})
    if unknown:
        raise GreatError(f"method {name!r} has no hyperparameter {', '.join(unknown)}; it takes "
                         f"{', '.join(sorted(accepted)) or 'none'}")
    hyperparameters.setdefault("name", f"mtl_{name}")
    return cls(encoder, decoders, tuple(tasks), **hyperparameters)


def build_multitask_network(input_shape, tasks, width):
    """The paper's CIFAR-10 multi-task network: ResNet-18 encoder and one decoder per task."""
    from great_tf.models import classification_decoder, dense_decoder, resnet18_encoder

    encoder = resnet18_encoder(input_shape, width, name="encoder")
    feature_shape = tuple(encoder.output.shape[1:])
    decoders = {}
    for t in tasks:
        if t.kind == "classification":
            decoders[t.name] = classification_decoder(feature_shape, t.units, name=f"{t.name}_decoder")
        else:
            decoders[t.name] = dense_decoder(feature_shape, t.units, width, name=f"{t.name}_decoder")
    return encoder, decoders


def tiny_multitask_network(input_shape, tasks, channels=3, decoder_channels=0):
    """The smallest network with every piece a real one has, for tests and smoke benchmarks:
    convolution, ExactBatchNorm and ReLU as the encoder; per task an optional 1x1 convolution and
    ExactBatchNorm (`decoder_channels` > 0), then a pooled linear layer (classification) or a 1x1
    convolution (dense tasks)."""
    import keras

    from great_tf.models.blocks import batch_norm

    inputs = keras.Input(input_shape)
    feature = keras.layers.ReLU()(batch_norm()(keras.layers.Conv2D(channels, 3, padding="same")(inputs)))
    encoder = keras.Model(inputs, feature, name="encoder")
    decoders = {}
    for t in tasks:
        head = x = keras.Input(feature.shape[1:])
        if decoder_channels:
            x = batch_norm()(keras.layers.Conv2D(decoder_channels, 1)(x))
        if t.kind == "classification":
            out = keras.layers.Dense(t.units)(keras.layers.GlobalAveragePooling2D()(x))
        else:
            out = keras.layers.Conv2D(t.units, 1)(x)
        decoders[t.name] = keras.Model(head, out, name=f"{t.name}_decoder")
    return encoder, decoders


def build_mtl_model(method, input_shape=(32, 32, 1), tasks=CIFAR10_NOISY_TASKS, width=64,
                    network=build_multitask_network, **hyperparameters):
    """A multi-task model for `method` on the paper's network (or `network(input_shape, tasks,
    width) -> (encoder, decoders)`) at `width`, with the method's extra networks (GREAT's task
    classifier) built at the same width."""
    cls = method_class(method)
    encoder, decoders = network(input_shape, tasks, width)
    feature_shape = tuple(encoder.output.shape[1:])
    components = cls.default_components(feature_shape, tasks, width)
    return build_method(method, encoder, decoders, tasks, **components, **hyperparameters)


def compile_mtl(model, steps_per_epoch, epochs, learning_rate=1e-3):
    """The paper's optimisers: Adam with the poly multiplier for the network and, with the same
    policy, for every variable set of the method (supplement, multi-task), except those whose
    method's paper fixes another (`method_optimizers`: FAMO's logits)."""
    def adam():
        return poly_adam(learning_rate, steps_per_epoch, epochs)

    own = model.method_optimizers()
    model.compile(optimizer=adam(), **{name: own.get(name) or adam()
                                       for name in model.optimizer_variables()})
    return model
