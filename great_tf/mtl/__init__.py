"""Multi-task learning: GREAT (Algorithm 3) and the methods it is compared with, as plug-ins.

    from great_tf import mtl
    model = mtl.build_method("pcgrad", encoder, decoders, tasks)   # any registered method
    model.compile(optimizer="adam")
    mtl.available_methods()

One file per method in `great_tf/mtl/methods/` (docs/design.md#mtl-methods); the base model and
its hook are in `great_tf/mtl/base.py`.
"""

from great_tf.mtl.base import InitialLosses, MultiTaskModel, Step, TaskWeights, registry
from great_tf.mtl.gradients import TaskGradients
from great_tf.mtl.network import (available_methods, build_method, build_mtl_model,
                                  build_multitask_network, compile_mtl, method_class)
from great_tf.mtl.tasks import CIFAR10_NOISY_TASKS, HIGHER, LOWER, ClassError, Task
from great_tf.mtl.methods.dwa import DynamicWeightAverageMTL
from great_tf.mtl.methods.equal import EqualWeightsMTL
from great_tf.mtl.methods.gradnorm import GradNormMTL, last_kernel
from great_tf.mtl.methods.great import GreatMTL
from great_tf.mtl.methods.uncertainty import UncertaintyMTL


def __getattr__(name):
    if name == "METHODS":  # the registered names, for code written before the registry
        return available_methods()
    raise AttributeError(f"module 'great_tf.mtl' has no attribute {name!r}")


__all__ = ["CIFAR10_NOISY_TASKS", "ClassError", "DynamicWeightAverageMTL", "EqualWeightsMTL",
           "GradNormMTL", "GreatMTL", "HIGHER", "InitialLosses", "LOWER", "MultiTaskModel", "Step",
           "Task", "TaskGradients", "TaskWeights", "UncertaintyMTL", "available_methods",
           "build_method", "build_mtl_model", "build_multitask_network", "compile_mtl",
           "last_kernel", "method_class", "registry"]
