"""What every train step needs to be correct under a `tf.distribute` strategy.

Losses are sums over a replica's examples divided by the *global* batch, so that the optimizer's
sum of replica gradients is the gradient of the global-batch mean; quantities that must be global
inside a step (first-batch losses, GradNorm's gradient norms) are all-reduced with `replica_sum`.
On one device all of this reduces to the plain computation.
"""

import json
import os

import tensorflow as tf


def num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def global_batch_size(x, dtype=tf.float32):
    """The batch size summed over replicas, as a scalar of `dtype`."""
    return tf.cast(tf.shape(x)[0] * num_replicas(), dtype)


def replica_sum(value):
    """The sum of `value` over the replicas of the current step (itself on one device)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


# -- strategies ------------------------------------------------------------------------------------
# Every trainer takes --strategy default|mirrored|multiworker and --cpu-replicas N; build the
# strategy with `make_strategy` BEFORE any TensorFlow op runs (logical CPU devices can only be
# configured before TF initialises its runtime), then create every model, auxiliary network, GAL
# and optimizer inside `strategy.scope()`. Keras' `fit` distributes the tf.data pipeline.

STRATEGIES = ("default", "mirrored", "multiworker")


def configure_cpu_replicas(n):
    """Splits the CPU into `n` logical devices (/cpu:0 .. /cpu:n-1) so MirroredStrategy can run
    `n` replicas on a machine without GPUs. A no-op when they are already configured."""
    from great_tf.errors import GreatError

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise GreatError(f"cannot split the CPU into {n} replicas: TensorFlow is already running "
                         f"with {have} CPU device(s); set --cpu-replicas before any TF op runs") from None


def auto_strategy_name():
    """multiworker under TF_CONFIG, mirrored with more than one GPU, else default."""
    if os.environ.get("TF_CONFIG"):
        return "multiworker"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def make_strategy(name=None, cpu_replicas=None):
    """The `tf.distribute` strategy named `name` (None: `auto_strategy_name()`).

    `cpu_replicas` (>= 1) mirrors over that many logical CPU devices instead of the GPUs: for tests
    and machines without GPUs. One-line `GreatError`s for combinations that cannot work.
    """
    from great_tf.errors import GreatError

    name = name or ("mirrored" if cpu_replicas else auto_strategy_name())
    if name not in STRATEGIES:
        raise GreatError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_replicas:
        if name != "mirrored":
            raise GreatError(f"--cpu-replicas works with --strategy mirrored only, not {name}")
        if gpus:
            raise GreatError(f"--cpu-replicas splits the CPU, but {len(gpus)} GPU(s) are visible: "
                             f"drop --cpu-replicas to mirror over the GPUs")
        configure_cpu_replicas(cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # every visible GPU, else the CPU
    if not os.environ.get("TF_CONFIG"):
        raise GreatError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's "
                         "task): start workers with `python -m trainers.launch --workers N -- ...`")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        raise GreatError(f"TF_CONFIG is not valid JSON: {os.environ['TF_CONFIG']!r}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy=None):
    """True on the one worker that writes checkpoints, logs and tables (always, outside
    multi-worker training): the task "chief", else worker 0."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def is_multiworker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_id(strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    return 0 if resolver is None or resolver.task_id is None else int(resolver.task_id)


def enable_jit(model, strategy=None):
    """XLA-compiles the model's train step (`model.jit_compile`), on one replica only.

    Keras turns XLA off under `tf.distribute`, and TensorFlow cannot XLA-compile a replica's step
    whose cross-replica sums (synchronized BatchNorm statistics, gradient all-reduce) run through
    `merge_call` (every CPU strategy; measured: the compiled step reads the other replica's
    variables across devices and fails), so --jit is refused with several replicas.
    """
    check_jit(strategy or tf.distribute.get_strategy())
    model.jit_compile = True
    return model


def check_jit(strategy):
    from great_tf.errors import GreatError

    if strategy.num_replicas_in_sync > 1 or is_multiworker(strategy):
        raise GreatError(f"--jit runs on one device only ({strategy.num_replicas_in_sync} replicas "
                         f"here): Keras and TF cannot XLA-compile a step with cross-replica sums; "
                         f"drop --jit or use --strategy default")


def prepare_for_strategy(model, strategy):
    """Works around two Keras 3.15 failures of `fit` under MultiWorkerMirroredStrategy
    (tensorflow/tensorflow#72388); a no-op under every other strategy.

    1. `fit` first reduces one distributed batch with `strategy.reduce("MEAN", (x, y))` only to
       read its shapes, which fails across workers. great_tf's models are built at construction
       and their optimizers at `compile`, so that symbolic build has nothing to do: skip it.
    2. Keras reduces every log value across workers with `strategy.reduce("MEAN", v, axis=0)`,
       which fails for scalars: the steps' logs are returned with shape [1] (the reduction gives
       back scalars, averaged over replicas that each saw an equal share of the global batch;
       like Keras under MirroredStrategy, a non-linear metric such as RMSE is then the mean of
       the replicas' values, not the RMSE of the global batch).
    """
    if not is_multiworker(strategy):
        return model
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def step_with_vector_logs(data, step=step):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}

        setattr(model, name, step_with_vector_logs)
    return model
