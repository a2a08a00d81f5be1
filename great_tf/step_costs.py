"""What one train step costs besides arithmetic, counted on its traced graph, not estimated
(docs/design.md#distribution).

Under a `tf.distribute` strategy every cross-replica sum is a synchronisation point: each replica
waits for the others there. `cross_replica_costs(model, batch, strategy)` traces (does not run)
one train step under `strategy` and reports:

- `all_reduces`: the collective reductions in the traced step, per replica (each one
  synchronisation point, however many tensors it packs), counted as graph ops
  (`CollectiveReduceV2` under MirroredStrategy and MultiWorkerMirroredStrategy);
- `by_source`: the same all-reduces by who asked for them: "batch norm" (`ExactBatchNorm`'s
  synchronized statistics and their gradients), "gradients" (each optimizer sums its gradients
  over the replicas once) and "method" (everything else: the method's global losses, Gram
  matrices, task gradients, norms);
- `tensors`: how many tensors those all-reduces carry in all;
- `broadcasts`: writes of `ONLY_FIRST_REPLICA` variables in the step (each optimizer's step
  counter), which copy replica 0's value to the other replicas.

`encoder_backward_passes(model, graph)` counts how often a traced single-device step back-propagates
through a multi-task model's whole encoder: the gradient ops of the encoder's first convolution
kernel (gradient-manipulating methods in the shared-parameter space need one per task).
"""

import collections
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

COLLECTIVE_REDUCTIONS = ("CollectiveReduce", "CollectiveReduceV2", "CollectiveReduceV3",
                         "NcclAllReduce")


@dataclass
class CrossReplicaCosts:
    all_reduces: int = 0
    tensors: int = 0
    broadcasts: int = 0
    by_source: dict = field(default_factory=dict)

    def describe(self):
        """'181 (batch norm 177, gradients 3, method 1)'."""
        parts = ", ".join(f"{k} {v}" for k, v in self.by_source.items() if v)
        return f"{self.all_reduces} ({parts})" if parts else str(self.all_reduces)


def _source(frames):
    files = [f.filename.replace(os.sep, "/") for f in frames]
    if any(f.endswith("great_tf/models/normalization.py") for f in files):
        return "batch norm"
    if any("keras/src/" in f and "optimizer" in f for f in files):
        return "gradients"
    return "method"


def _is_first_replica(context):
    return getattr(context, "_replica_id_in_sync_group", 0) == 0


@contextmanager
def recording():
    """Records, while active, the all-reduces and `ONLY_FIRST_REPLICA` writes issued by replica 0
    of any step being traced: yields {"sources": Counter, "tensors": [n], "broadcasts": [n]}."""
    import traceback

    import tensorflow as tf
    from tensorflow.python.distribute import distribute_lib

    record = {"sources": collections.Counter(), "tensors": [0], "broadcasts": [0]}
    base = distribute_lib.ReplicaContextBase
    all_reduce, merge_call = base.all_reduce, base.merge_call

    def counted_all_reduce(self, reduce_op, value, options=None):
        if _is_first_replica(self):
            record["sources"][_source(traceback.extract_stack()[:-1])] += 1
            record["tensors"][0] += len(tf.nest.flatten(value))
        return all_reduce(self, reduce_op, value, options)

    def counted_merge_call(self, merge_fn, args=(), kwargs=None):
        # A write of an aggregated (not NONE) mirrored variable in a replica context.
        name = getattr(merge_fn, "__qualname__", "")
        if _is_first_replica(self) and "_on_write_update_replica" in name:
            record["broadcasts"][0] += 1
        return merge_call(self, merge_fn, args, kwargs)

    base.all_reduce, base.merge_call = counted_all_reduce, counted_merge_call
    try:
        yield record
    finally:
        base.all_reduce, base.merge_call = all_reduce, merge_call


def graph_ops(graph):
    """Every op of a traced graph and of the functions it calls (while loops, conds)."""
    seen, ops = set(), []
    stack = [graph]
    while stack:
        g = stack.pop()
        if id(g) in seen:
            continue
        seen.add(id(g))
        ops += g.get_operations()
        stack += [f.graph for f in getattr(g, "_functions", {}).values() if hasattr(f, "graph")]
    return ops


def count_collective_reductions(graph):
    return sum(op.type in COLLECTIVE_REDUCTIONS for op in graph_ops(graph))


def distributed_batch(batch, strategy):
    """`batch` (one global batch) split over the replicas as `fit` splits it."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(batch)
    return next(iter(strategy.experimental_distribute_dataset(dataset)))


def trace_train_step(model, batch, strategy):
    """The concrete function of one `model.train_step` on `batch` under `strategy`, traced only:
    no variable changes."""
    import tensorflow as tf

    @tf.function
    @tf.autograph.experimental.do_not_convert
    def step(data):
        return strategy.run(model.train_step, args=(data,))

    return step.get_concrete_function(distributed_batch(batch, strategy))


def cross_replica_costs(model, batch, strategy):
    """`CrossReplicaCosts` of one train step of `model` (built in `strategy.scope()`) on `batch`."""
    with recording() as record:
        graph = trace_train_step(model, batch, strategy).graph
    sources = {k: record["sources"].get(k, 0) for k in ("batch norm", "gradients", "method")}
    reductions = count_collective_reductions(graph) // local_replicas(strategy)
    return CrossReplicaCosts(reductions, record["tensors"][0], record["broadcasts"][0], sources)


def local_replicas(strategy):
    """The replicas this process runs (each holds one copy of every collective op)."""
    try:
        return max(1, len(strategy.extended.worker_devices))
    except RuntimeError:  # the default strategy: one device
        return 1


# -- backward passes ---------------------------------------------------------------------------------

def first_kernel(model):
    """The kernel of the first layer with a 4-D kernel (a convolution) in `model`, depth first."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            kernel = first_kernel(layer)
            if kernel is not None:
                return kernel
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4:
            return kernel
    return None


def encoder_backward_passes(model, graph):
    """How many backward passes the traced single-device train step `graph` (e.g.
    `tf.function(model.train_step).get_concrete_function(batch).graph`) of the multi-task `model`
    makes through the whole encoder: the filter-gradient ops of the encoder's first convolution,
    which read the step's input."""
    kernel = first_kernel(model.encoder)
    if kernel is None:
        raise ValueError("the encoder has no convolution to count backward passes at")
    ops = graph_ops(graph)
    shape = tuple(kernel.shape)
    inputs = {op.inputs[0].name for op in ops if op.type == "Conv2D"
              and tuple(op.inputs[1].shape) == shape and _reads_input(op.inputs[0])}
    return sum(op.type == "Conv2DBackpropFilter" and op.inputs[0].name in inputs for op in ops)


def _reads_input(tensor, depth=4):
    """True if `tensor` is (a cast, identity or padding of) a placeholder: the step's input."""
    op = tensor.op
    for _ in range(depth):
        if op.type == "Placeholder":
            return True
        if op.type not in ("Cast", "Identity", "Pad", "PadV2", "MirrorPad") or not op.inputs:
            return False
        op = op.inputs[0].op
    return False
