"""Distributed GREAT steps equal single-device steps; XLA steps equal plain steps; strategy flags.

MirroredStrategy runs for real on two logical CPU devices (tests/conftest.py creates them). Each
test builds the same tiny networks (seeded) under one device and under two replicas, trains one
or two steps on the same global batch with SGD (Adam's sign-like update would hide a wrongly
scaled gradient), and compares every weight: network and auxiliary weights, GALs, BatchNorm moving
statistics, initial losses. float64, so that what remains is summation order: tolerance 1e-9
absolute (measured: at most 4e-15). With the losses divided by the replica's batch instead of the
global batch the weights differ by 2e-2 to 1.6; with per-replica BatchNorm statistics
(`replica_total` in great_tf.models.normalization made the identity) by 2e-3 to 1.3e-2 (measured by
temporary mutation).

XLA: Keras turns XLA off under tf.distribute and TF cannot XLA-compile a replica step whose
cross-replica sums go through merge_call (every CPU strategy), so --jit is tested on one device
(same weights as the plain step) and refused with several replicas.
"""

import concurrent.futures

import keras
import numpy as np
import pytest
import tensorflow as tf

from great_tf import distill, mtl
from great_tf.errors import GreatError
from great_tf.models.blocks import batch_norm

ATOL = 1e-9
BATCH = 4  # global: 2 per replica
SIZE = 8
CLASSES = 3


def conv_net(outputs, act="relu", name=None, pool=True, input_channels=1):
    """conv - synchronized BN - activation (- pool - dense): the smallest net with every piece."""
    x = inputs = keras.Input((SIZE, SIZE, input_channels))
    x = keras.layers.Conv2D(3, 3, padding="same")(x)
    x = batch_norm()(x)
    x = keras.layers.LeakyReLU(0.2)(x) if act == "leaky_relu" else keras.layers.ReLU()(x)
    if pool:
        x = keras.layers.Dense(outputs)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, x, name=name)


def sgd():
    return keras.optimizers.SGD(0.1)


def build_great_mtl():
    tasks = (mtl.Task("class", "classification", CLASSES), mtl.Task("auto", "regression", 1))
    encoder = conv_net(None, pool=False, name="encoder")
    feature = encoder.output.shape[1:]
    head = keras.Input(feature)
    decoders = {
        "class": keras.Model(head, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling2D()(head))),
        "auto": keras.Model(head, keras.layers.Conv2D(1, 1)(head)),
    }
    classifier = conv_net(len(tasks), "leaky_relu", "classifier", input_channels=feature[-1])
    model = mtl.GreatMTL(encoder, decoders, tasks, classifier=classifier)
    model.compile(optimizer=sgd(), weight_optimizer=sgd(), classifier_optimizer=sgd())
    return model


def mtl_batches(rng, steps):
    x = rng.random((steps, BATCH, SIZE, SIZE, 1))
    y = {"class": rng.integers(0, CLASSES, (steps, BATCH)), "auto": rng.random((steps, BATCH, SIZE, SIZE, 1))}
    return x, y


def build_great_distiller():
    teacher = conv_net(CLASSES, name="teacher")
    student = conv_net(CLASSES, name="student")
    discriminator = conv_net(1, "leaky_relu", "discriminator")
    model = distill.GreatDistiller(teacher, student, discriminator, alpha=0.3)
    model.compile(optimizer=sgd(), discriminator_optimizer=sgd())
    return model


def build_great_defense():
    from great_tf.defense import GreatDefense

    main = conv_net(CLASSES, name="main")
    auxiliary = conv_net(CLASSES, "leaky_relu", "auxiliary")
    model = GreatDefense(main, auxiliary, "great+ce", alpha=0.5, beta=1.0)
    model.compile(optimizer=sgd(), aux_optimizer=sgd())
    return model


def build_adversarial_training():
    """FGSM adversarial training: clean and FGSM examples in one synchronized-BN forward."""
    from great_tf.defense import GreatDefense

    model = GreatDefense(conv_net(CLASSES, name="main"), None, "adversarial", fgsm_eps=0.1)
    model.compile(optimizer=sgd())
    return model


def classification_batches(rng, steps):
    return rng.random((steps, BATCH, SIZE, SIZE, 1)), rng.integers(0, CLASSES, (steps, BATCH))


STEPS = {  # name: (model builder, data maker)
    "mtl": (build_great_mtl, mtl_batches),
    "distill": (build_great_distiller, classification_batches),
    "defense": (build_great_defense, classification_batches),
    "adversarial": (build_adversarial_training, classification_batches),
}


def trained_weights(name, strategy, steps=2, jit=False):
    """Every weight after `steps` fit steps of the GREAT model `name`, built with seed 0."""
    build, batches = STEPS[name]
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build()
    initial = [v.numpy() for v in model.weights]
    model.jit_compile = jit
    data = tf.data.Dataset.from_tensor_slices(batches(np.random.default_rng(1), steps))
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return initial, [v.numpy() for v in model.weights]


def max_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


@pytest.mark.parametrize("name", list(STEPS))
def test_two_replicas_give_the_single_device_weights(name, mirrored, float64):
    initial, single = trained_weights(name, tf.distribute.get_strategy())
    _, replicated = trained_weights(name, mirrored)
    assert len(single) == len(replicated)
    assert max_difference(initial, single) > 1e-3  # the steps did move the weights
    assert max_difference(single, replicated) < ATOL


@pytest.mark.parametrize("name", list(STEPS))
def test_float32_two_replicas_match_the_fused_single_device_step(name, mirrored):
    """In float32 one device runs ExactBatchNorm's fused kernels and two replicas its cross-replica
    formulas; one step apart they differ by rounding only. (A second SGD step can amplify rounding
    in these tiny networks as much as reordering the batch does, so one step is compared.)"""
    initial, single = trained_weights(name, tf.distribute.get_strategy(), steps=1)
    _, replicated = trained_weights(name, mirrored, steps=1)
    assert max_difference(initial, single) > 1e-3
    assert max_difference(single, replicated) < 1e-5


@pytest.mark.parametrize("name", list(STEPS))
def test_xla_step_gives_the_plain_step_weights(name, float64):
    initial, plain = trained_weights(name, tf.distribute.get_strategy(), steps=1)
    _, compiled = trained_weights(name, tf.distribute.get_strategy(), steps=1, jit=True)
    assert max_difference(initial, plain) > 1e-3
    assert max_difference(plain, compiled) < ATOL


# -- flags: one-line errors before any data is loaded ----------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--cpu-replicas", "2", "--strategy", "default"], "--cpu-replicas works with --strategy mirrored only"),
    (["--strategy", "multiworker"], "--strategy multiworker needs TF_CONFIG"),
    (["--cpu-replicas", "2", "--jit"], "--jit runs on one device only (2 replicas here)"),
    (["--cpu-replicas", "3", "--batch-size", "6"], "cannot split the CPU into 3 replicas"),
])
def test_bad_strategy_flags_end_in_one_line(argv, message, capsys, monkeypatch):
    from trainers import flags
    from trainers import mtl as trainer

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        flags.run_cli(trainer.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_cpu_replicas_build_a_two_replica_mirrored_strategy():
    from great_tf.distribute import is_chief, make_strategy

    strategy = make_strategy(None, cpu_replicas=2)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2 and is_chief(strategy)
    with pytest.raises(GreatError, match="unknown strategy"):
        make_strategy("tpu")


# -- multi-worker on localhost ---------------------------------------------------------------------

def run_launcher(args, timeout):
    """Runs trainers.launch in a subprocess; on a timeout SIGTERM makes it stop its workers."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "trainers.launch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the launcher did not finish within {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


MTL_TINY = ["--method", "great", "--width", "2", "--batch-size", "8", "--train-limit", "16",
            "--eval-limit", "8", "--steps-per-epoch", "2", "--verbose", "0"]


def test_two_workers_stopped_and_resumed_match_an_uninterrupted_single_process(tmp_path, cache_dir):
    """--stop-after 1 of 2 epochs on 2 workers, then --resume on 2 workers: the chief's epoch
    losses are a single process's uninterrupted ones (the non-chief resumes from a copy of the
    chief's checkpoint), and only the chief wrote into --logdir."""
    import sys

    from great_tf.summaries import read_events
    from trainers import mtl as trainer

    two_epochs = [*MTL_TINY, "--epochs", "2"]
    launch = ["--workers", "2", "--timeout", "240", "--", sys.executable, "-m", "trainers.mtl",
              "--logdir", str(tmp_path / "multi"), *two_epochs]
    # The single-process reference trains here while the workers start up (they wait on each
    # other much of the time); the two do not share a folder.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stopped = pool.submit(run_launcher, [*launch, "--stop-after", "1"], 300)
        trainer.main(["--logdir", str(tmp_path / "single"), *two_epochs])
        code, out, err = stopped.result()
    assert code == 0, out[-3000:] + err[-3000:]
    assert "stopped after epoch 1 of 2 (--stop-after)" in out + err
    assert not (tmp_path / "multi" / "great" / "result.json").exists()
    code, out, err = run_launcher([*launch, "--resume"], timeout=300)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "[worker 0] resuming" in out and "[worker 1] resuming" in out
    assert (tmp_path / "multi" / "great" / "result.json").exists()
    single = read_events(str(tmp_path / "single" / "great"))["train/epoch_loss"]
    multi = read_events(str(tmp_path / "multi" / "great"))["train/epoch_loss"]
    assert [step for step, _ in multi] == [step for step, _ in single] == [0, 1]
    # float32: per-worker BatchNorm sums round differently (measured ~4e-5 relative).
    np.testing.assert_allclose([float(v) for _, v in multi], [float(v) for _, v in single], rtol=1e-3)
    assert "[worker 0]" in out and "[worker 1]" in out
    assert (tmp_path / "multi" / "great" / "checkpoints" / "checkpoint").exists()
    assert len(list((tmp_path / "multi" / "great" / "train").glob("events.out*"))) == 2  # the chief's, one per launch


def test_a_killed_worker_stops_the_launch_with_a_clear_message():
    import sys

    worker = ("import json, os, signal, time; "
              "index = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
              "print('up', flush=True); time.sleep(0.5); "
              "os.kill(os.getpid(), signal.SIGKILL) if index == 1 else time.sleep(120)")
    code, out, err = run_launcher(["--workers", "2", "--", sys.executable, "-c", worker], timeout=60)
    assert code != 0
    assert "launch: error: worker 1 was killed by SIGKILL; stopping the other workers" in err
    assert "[worker 0] up" in out and "[worker 1] up" in out
