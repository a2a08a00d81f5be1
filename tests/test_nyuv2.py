"""NYUv2: loader and cache on tfds.testing.mock_data, masked losses and metrics, the pipeline,
every method end to end at tiny size, the TensorBoard images and the benchmark's registration."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from great_tf import mtl
from great_tf.data import nyuv2, train_dataset
from great_tf.data.mapped import mapped_eval_dataset, mapped_stream_dataset, mapped_train_dataset
from great_tf.data.pipeline import stream_dataset
from great_tf.errors import GreatError
from great_tf.models.drn import drn_multitask_network
from great_tf.mtl import dense_metrics as dm
from great_tf.mtl.benchmarks import get_benchmark
from great_tf.mtl.nyuv2_tasks import NYUV2_TASKS, DepthTask, NormalsTask

IMAGE, TARGET, MOCK_EXAMPLES = 32, 8, 12


def mock_load(split, cache, limit=None, **kwargs):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return nyuv2.load_nyuv2(split, "/nonexistent/mock", limit, IMAGE, TARGET,
                                cache_dir=str(cache), **kwargs)


@pytest.fixture(scope="module")
def mock_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("nyuv2_cache")


@pytest.fixture(scope="module")
def mock_train(mock_cache):
    return mock_load("train", mock_cache)


# -- loader and cache ---------------------------------------------------------------------------
def test_mock_split_is_prepared_once_at_the_requested_sizes(mock_train, mock_cache, monkeypatch):
    images, targets = mock_train
    assert images.shape == (MOCK_EXAMPLES, IMAGE, IMAGE, 3) and images.dtype == np.uint8
    assert isinstance(images, np.memmap)  # read from the cache, not held in memory
    assert targets["depth"].shape == (MOCK_EXAMPLES, TARGET, TARGET, 1)
    assert targets["normals"].shape == (MOCK_EXAMPLES, TARGET, TARGET, 3)
    valid = targets["depth"][..., 0] > 0
    assert valid.mean() > 0.9  # mock depths are uniform in (0, 1): almost all valid
    lengths = np.linalg.norm(targets["normals"], axis=-1)
    normal_ok = lengths > 0
    np.testing.assert_allclose(lengths[normal_ok], 1.0, atol=1e-5)
    assert not np.any(normal_ok & ~valid)

    def no_preparation(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(nyuv2, "prepare", no_preparation)
    again, again_targets = mock_load("train", mock_cache)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_targets["normals"], targets["normals"])
    assert set(mock_load("train", mock_cache, tasks=("depth",))[1]) == {"depth"}


def test_limit_and_the_validation_split(mock_cache, mock_train):
    images, targets = mock_load("train", mock_cache, limit=5)
    assert len(images) == 5 and len(targets["depth"]) == 5
    np.testing.assert_array_equal(images, mock_train[0][:5])  # the first 5, in TFDS' order
    val_images, _ = mock_load("validation", mock_cache)
    assert len(val_images) == MOCK_EXAMPLES


def test_an_interrupted_preparation_leaves_no_cache_behind(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(nyuv2, "write_examples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mock_load("validation", tmp_path, limit=3)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert len(mock_load("validation", tmp_path, limit=3)[0]) == 3


def test_derived_targets_average_only_valid_depth_and_mask_the_rest():
    depth = np.full((1, 48, 64), 2.0, np.float32)
    depth[0, :, :8] = 0.0                 # the first target column: all invalid
    depth[0, :, 8:12] = 0.0               # the second: half invalid, half at 4.0
    depth[0, :, 12:16] = 4.0
    small, normals = nyuv2.derived_targets(depth, 8)
    assert small.shape == (1, 8, 8, 1) and normals.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(small[0, :, 0, 0], 0.0)
    np.testing.assert_allclose(small[0, :, 1, 0], 4.0)  # not (0 + 4) / 2
    np.testing.assert_allclose(small[0, :, 2:, 0], 2.0)
    np.testing.assert_array_equal(normals[0, :, 0], 0.0)
    assert np.all(np.linalg.norm(normals[0, :, 2:], axis=-1) > 0.99)


def test_a_missing_data_set_is_one_clear_line(tmp_path):
    with pytest.raises(GreatError) as err:
        nyuv2.load_nyuv2("train", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert "\n" not in message and "'nyu_depth_v2'" in message and str(tmp_path) in message
    assert "tfds build nyu_depth_v2" in message and "internet" in message


def test_an_unknown_split_or_task_is_refused(tmp_path):
    with pytest.raises(GreatError, match="train and validation"):
        nyuv2.load_nyuv2("test", str(tmp_path))
    with pytest.raises(GreatError, match="keypoints"):
        nyuv2.load_nyuv2("train", str(tmp_path), tasks=("depth", "keypoints"))


# -- masked losses and metrics ------------------------------------------------------------------
def random_batch(seed=0, n=3, size=6):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 5.0, (n, size, size, 1)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.3] = 0.0
    normals = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[rng.random((n, size, size)) < 0.3] = 0.0
    return depth, normals, rng


def np_abs_cos(target, output):
    t = target / np.maximum(np.linalg.norm(target, axis=-1, keepdims=True), 1e-30)
    o = output / np.linalg.norm(output, axis=-1, keepdims=True)
    return np.abs(np.sum(t * o, -1))


def test_depth_loss_is_the_mean_over_valid_pixels_and_ignores_invalid_ones():
    depth, _, rng = random_batch()
    output = rng.normal(2.0, 1.0, depth.shape).astype(np.float32)
    valid = depth[..., 0] > 0
    expected = [np.mean(((output - depth)[..., 0][i])[valid[i]] ** 2) for i in range(3)]
    loss = DepthTask().per_example_loss(depth, output)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    wild = np.where(depth > 0, output, 1e6).astype(np.float32)  # huge errors at invalid pixels
    np.testing.assert_allclose(DepthTask().per_example_loss(depth, wild), expected, rtol=1e-5)
    out = tf.Variable(output)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(DepthTask().per_example_loss(depth, out))
    grad = tape.gradient(total, out).numpy()[..., 0]
    assert np.all(grad[~valid] == 0.0) and np.all(grad[valid] != 0.0)


def test_normals_loss_is_one_minus_abs_cos_over_valid_pixels():
    _, normals, rng = random_batch(1)
    output = rng.normal(size=normals.shape).astype(np.float32)
    valid = np.linalg.norm(normals, axis=-1) > 0
    per_pixel = 1.0 - np_abs_cos(normals, output)
    expected = [per_pixel[i][valid[i]].mean() for i in range(3)]
    np.testing.assert_allclose(NormalsTask().per_example_loss(normals, output), expected, rtol=1e-5)
    np.testing.assert_allclose(NormalsTask().per_example_loss(normals, -output), expected, rtol=1e-5)
    out = tf.Variable(np.where(valid[..., None], output, 0.0).astype(np.float32))  # zero outputs too
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(NormalsTask().per_example_loss(normals, out))
    grad = tape.gradient(total, out).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad[~valid] == 0.0)
    empty = np.zeros_like(normals)
    np.testing.assert_array_equal(NormalsTask().per_example_loss(empty, output), 0.0)


def assert_a_median(value, samples):
    """Within one histogram bin of the middle sample (of the lower one for an even count: the
    histogram cannot split the gap between two samples; with millions of pixels it is tiny)."""
    middle = np.sort(samples)[(len(samples) - 1) // 2]
    assert abs(value - middle) <= dm.ANGLE_BIN, (value, middle)


def test_metrics_pool_the_valid_pixels_of_every_batch():
    batches = []
    for seed in (2, 3):
        depth, normals, rng = random_batch(seed)
        batches.append((depth, rng.uniform(0.5, 5.0, depth.shape).astype(np.float32),
                        normals, rng.normal(size=normals.shape).astype(np.float32)))
    depth_metrics = {m.name: m for m in DepthTask().make_metrics()}
    normal_metrics = {m.name: m for m in NormalsTask().make_metrics()}
    for depth, depth_out, normals, normals_out in batches:
        for m in depth_metrics.values():
            m.update_state(depth, depth_out)
        for m in normal_metrics.values():
            m.update_state(normals, normals_out)
    d_true = np.concatenate([b[0] for b in batches])[..., 0]
    d_out = np.concatenate([b[1] for b in batches])[..., 0]
    ok = d_true > 0
    err = d_out[ok] - d_true[ok]
    assert ok.sum() < d_true.size  # the invalid pixels are really there
    np.testing.assert_allclose(depth_metrics["depth_rmse"].result(), np.sqrt(np.mean(err**2)), rtol=1e-5)
    np.testing.assert_allclose(depth_metrics["depth_abs_error"].result(), np.mean(np.abs(err)), rtol=1e-5)
    np.testing.assert_allclose(depth_metrics["depth_rel_error"].result(),
                               np.mean(np.abs(err) / d_true[ok]), rtol=1e-5)
    n_true = np.concatenate([b[2] for b in batches])
    n_out = np.concatenate([b[3] for b in batches])
    ok = np.linalg.norm(n_true, axis=-1) > 0
    cos = np_abs_cos(n_true, n_out)[ok]
    angle = np.degrees(np.arccos(np.clip(cos, 0, 1)))
    results = {name: float(m.result()) for name, m in normal_metrics.items()}
    np.testing.assert_allclose(results["normals_cosine_error"], np.mean(1 - cos), rtol=1e-5)
    np.testing.assert_allclose(results["normals_mean_angle"], angle.mean(), rtol=1e-5)
    assert_a_median(results["normals_median_angle"], angle)
    for degrees, key in ((11.25, "11_25"), (22.5, "22_5"), (30.0, "30")):
        np.testing.assert_allclose(results[f"normals_within_{key}"],
                                   100.0 * np.mean(angle < degrees), rtol=1e-5)


def test_median_angle_within_one_bin_on_many_pixels():
    rng = np.random.default_rng(4)
    metric = dm.NormalMedianAngle("median")
    angles = []
    for _ in range(3):
        target = np.tile([0.0, 0.0, -1.0], (2, 20, 20, 1)).astype(np.float32)
        theta = np.radians(rng.uniform(0, 90, (2, 20, 20)))
        output = np.stack([np.sin(theta), np.zeros_like(theta), -np.cos(theta)], -1).astype(np.float32)
        metric.update_state(target, output)
        angles.append(np.degrees(theta))
    assert_a_median(float(metric.result()), np.concatenate(angles).ravel())
    assert dm.NormalMedianAngle("empty").result() == 0.0


def test_metrics_on_two_replicas_equal_one_device(mirrored):
    depth, normals, rng = random_batch(6, n=4)
    depth_out = rng.uniform(0.5, 5.0, depth.shape).astype(np.float32)
    normals_out = rng.normal(size=normals.shape).astype(np.float32)
    batch = (depth, depth_out, normals, normals_out)

    def make():
        return DepthTask().make_metrics(), NormalsTask().make_metrics()

    def update(metrics, d, d_out, n, n_out):
        for m in metrics[0]:
            m.update_state(d, d_out)
        for m in metrics[1]:
            m.update_state(n, n_out)

    single = make()
    update(single, *batch)
    with mirrored.scope():
        replicated = make()
    halves = mirrored.experimental_distribute_values_from_function(
        lambda ctx: tuple(t[2 * ctx.replica_id_in_sync_group: 2 * ctx.replica_id_in_sync_group + 2]
                          for t in batch))
    tf.function(lambda values: mirrored.run(lambda *v: update(replicated, *v), args=values))(halves)
    for ours, theirs in zip(sum(replicated, []), sum(single, [])):
        np.testing.assert_allclose(ours.result(), theirs.result(), rtol=1e-6, err_msg=ours.name)


def test_every_metric_declares_its_direction():
    tasks = (DepthTask(), NormalsTask())
    for task in tasks:
        names = {m.name for m in task.make_metrics()}
        assert set(task.metric_directions()) == names == set(task.metric_labels())
    directions = NormalsTask().metric_directions()
    assert directions["normals_within_11_25"] == directions["normals_within_30"] == mtl.HIGHER
    assert directions["normals_median_angle"] == directions["normals_cosine_error"] == mtl.LOWER
    assert set(DepthTask().metric_directions().values()) == {mtl.LOWER}


# -- the memory-mapped pipeline -----------------------------------------------------------------
def test_mapped_pipeline_gives_the_batches_of_the_in_memory_stream():
    rng = np.random.default_rng(5)
    arrays = (rng.random((10, 4, 4, 3)).astype(np.float32),
              {"d": rng.random((10, 2, 2, 1)).astype(np.float32)})
    pairs = [(mapped_stream_dataset(arrays, 3, 7, 2, 7), stream_dataset(arrays, 3, 7, 2, 7)),
             (mapped_train_dataset(arrays, 3, 7, epochs=3, initial_epoch=1, steps=2),
              train_dataset(arrays, 3, 7, epochs=3, initial_epoch=1, steps=2))]
    for ours, theirs in pairs:  # batches 2..6 cross data epochs 0, 1, 2 (3 batches each)
        ours, theirs = list(ours), list(theirs)
        assert len(ours) == len(theirs) > 3
        for (x, y), (x2, y2) in zip(ours, theirs):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y["d"], y2["d"])
    images = (rng.random((5, 2, 2, 3)) * 255).astype(np.uint8)
    (x, y), = list(mapped_eval_dataset((images, {"d": arrays[1]["d"][:5]}), 8))
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    assert x.dtype == tf.float32 and y["d"].shape == (5, 2, 2, 1)


# -- every method end to end --------------------------------------------------------------------
@pytest.mark.parametrize("method", mtl.available_methods())
def test_every_method_trains_and_evaluates_on_mock_nyuv2(method, mock_train):
    """Eagerly, to keep 13 methods within seconds each (tracing the step costs 3-4x more at
    this size); the graph-mode step runs in the TensorBoard test below and in each method's own
    tests."""
    benchmark = get_benchmark("nyu_depth_v2")
    keras.utils.set_random_seed(0)
    model = mtl.build_mtl_model(method, mock_train[0].shape[1:], benchmark.tasks, 2,
                                network=benchmark.network)
    mtl.compile_mtl(model, steps_per_epoch=2, epochs=1)
    model.run_eagerly = True
    model.fit(benchmark.train_dataset(mock_train, 4, seed=0, epochs=1), epochs=1,
              steps_per_epoch=1, verbose=0, shuffle=False)
    scores = model.evaluate(benchmark.eval_dataset(mock_train, 12), return_dict=True, verbose=0)
    names = [name for task in benchmark.tasks for name in task.metric_labels()]
    assert len(names) == 9
    for name in names + ["depth_loss", "normals_loss"]:
        assert math.isfinite(scores[name]), (name, scores[name])
    assert scores["depth_rmse"] > 0 and 0 <= scores["normals_within_30"] <= 100


def test_tensorboard_shows_depth_and_normals_next_to_their_targets(tmp_path, mock_train):
    from great_tf.dense_summaries import SEPARATOR, DensePredictionImages
    from great_tf.summaries import read_events

    benchmark = get_benchmark("nyu_depth_v2")
    model = mtl.build_mtl_model("equal", mock_train[0].shape[1:], benchmark.tasks, 2,
                                network=benchmark.network)
    mtl.compile_mtl(model, steps_per_epoch=1, epochs=1)
    probe = benchmark.probe(mock_train, 3)
    assert probe[0].dtype == np.float32 and probe[0].max() <= 1.0
    callback = DensePredictionImages(str(tmp_path), probe, benchmark.tasks, max_images=2)
    model.fit(benchmark.train_dataset(mock_train, 4, seed=0, epochs=1), epochs=1,
              steps_per_epoch=1, verbose=0, shuffle=False, callbacks=[callback])
    events = read_events(str(tmp_path / "images"))
    for tag, width in (("images/depth", 2 * TARGET + SEPARATOR),
                       ("images/normals", 2 * TARGET + SEPARATOR), ("images/input", IMAGE)):
        steps = events[f"./{tag}"]
        assert [s for s, _ in steps] == [0, 1]
        header_and_pngs = steps[-1][1]
        assert int(header_and_pngs[0]) == width and len(header_and_pngs) == 2 + 2
        picture = tf.io.decode_png(header_and_pngs[2]).numpy()
        assert picture.shape[:2] == (TARGET if tag != "images/input" else IMAGE, width)


# -- the benchmark ------------------------------------------------------------------------------
def test_the_benchmark_is_registered_with_the_papers_rows_splits_and_presets():
    benchmark = get_benchmark("nyu_depth_v2")
    assert benchmark.splits == ("train", "validation")
    metrics = {name for task in benchmark.tasks for name in task.metric_directions()}
    assert set(benchmark.paper_rows) == {"equal", "uncertainty", "gradnorm", "great"}
    assert benchmark.paper_rows["great"] == {"depth_rmse": 0.779, "normals_cosine_error": 0.167}
    assert all(set(row) <= metrics for row in benchmark.paper_rows.values())
    assert benchmark.options == {"image_size": 320, "target_size": 80}
    paper = benchmark.presets["paper"]
    assert (paper["image_size"], paper["target_size"], paper["epochs"], paper["width"]) == (320, 80, 30, 64)
    assert set(benchmark.presets["small"]) == set(paper)
    gradnorm = mtl.method_class("gradnorm").hyperparameters
    assert set(benchmark.method_defaults["gradnorm"]) <= set(gradnorm)


def test_a_task_with_the_users_own_labels_joins_without_other_changes(cache_dir):
    from great_tf.mtl import Task
    from great_tf.mtl.datasets.nyu_depth_v2 import nyuv2_benchmark

    keypoints = Task("keypoints", "regression", 4)
    with pytest.raises(GreatError, match="keypoints"):
        nyuv2_benchmark("with_keypoints", NYUV2_TASKS + (keypoints,))
    labels = lambda split, limit, size: np.zeros((limit or MOCK_EXAMPLES, size, size, 4), np.float32)
    benchmark = nyuv2_benchmark("with_keypoints", NYUV2_TASKS + (keypoints,), {"keypoints": labels})
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        images, targets = benchmark.load("train", "/nonexistent/mock", 0, 4, image_size=IMAGE,
                                         target_size=TARGET)
    assert targets["keypoints"].shape == (4, TARGET, TARGET, 4) and len(images) == 4
