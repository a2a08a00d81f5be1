"""NYUv2 (the paper's Table 4, second half): depth and surface normals from RGB with a dilated
ResNet (docs/design.md#nyuv2).

    python -m trainers.mtl --dataset nyu_depth_v2 --method all                 # small preset
    python -m trainers.mtl --dataset nyu_depth_v2 --method great --preset paper

The paper's third task, room keypoints, has no public labels. With your own (or with
segmentation), register a benchmark with the task added; the encoder, the decoders and every
method take it unchanged:

    from great_tf.mtl import Task
    from great_tf.mtl.benchmarks import register_benchmark
    from great_tf.mtl.datasets.nyu_depth_v2 import nyuv2_benchmark
    from great_tf.mtl.nyuv2_tasks import NYUV2_TASKS

    def keypoints(split, limit, target_size):   # (N, T, T, 48) heatmaps in TFDS' order
        ...
    register_benchmark(nyuv2_benchmark(
        "nyuv2_keypoints", NYUV2_TASKS + (Task("keypoints", "regression", 48),),
        extra_targets={"keypoints": keypoints}))

(a module in great_tf/mtl/datasets/ is imported by the trainer, so `--dataset nyuv2_keypoints`
then works). A per-pixel classification task (segmentation) needs a `Task` subclass whose loss
averages the pixels' cross-entropy per example.
"""

from great_tf.errors import GreatError
from great_tf.mtl.benchmarks import Benchmark, register_benchmark
from great_tf.mtl.nyuv2_tasks import NYUV2_TASKS

IMAGE_SIZE, TARGET_SIZE = 320, 80

# The paper's Table 4, NYUv2 (its own 26,328 / 18,582 split with keypoints; 30 epochs): depth
# RMSE and normals 1 - |cos|. Its keypoint column (0.407 / 0.389 / 0.377 / 0.382) has no
# counterpart here: the labels are not public.
PAPER_ROWS = {
    "equal": {"depth_rmse": 0.861, "normals_cosine_error": 0.207},
    "uncertainty": {"depth_rmse": 0.796, "normals_cosine_error": 0.192},
    "gradnorm": {"depth_rmse": 0.810, "normals_cosine_error": 0.169},
    "great": {"depth_rmse": 0.779, "normals_cosine_error": 0.167},
}

PRESETS = {
    # Minutes on 2 CPU cores for every method: small images, a 256-frame subset, width 8.
    "small": {"epochs": 2, "batch_size": 16, "width": 8, "train_limit": 256, "eval_limit": 64,
              "steps_per_epoch": None, "image_size": 64, "target_size": 16},
    # The paper's supplement: 320x320 in, 80x80 out, Adam 1e-3 with the poly policy, 30 epochs.
    # The paper gives no batch size: 32 is our choice.
    "paper": {"epochs": 30, "batch_size": 32, "width": 64, "train_limit": None,
              "eval_limit": None, "steps_per_epoch": None, "image_size": IMAGE_SIZE,
              "target_size": TARGET_SIZE},
}


def nyuv2_benchmark(name="nyu_depth_v2", tasks=NYUV2_TASKS, extra_targets=None,
                    paper_rows=None):
    """A NYUv2 benchmark over `tasks`: "depth" and "normals" come from TFDS (derived, cached);
    every other task needs `extra_targets[name](split, limit, target_size)` -> (N, T, T, units)
    targets in TFDS' order of the split."""
    from great_tf.data.mapped import mapped_eval_dataset, mapped_stream_dataset
    from great_tf.data.nyuv2 import DERIVED_TASKS
    from great_tf.models.drn import drn_multitask_network

    tasks, extra_targets = tuple(tasks), dict(extra_targets or {})
    missing = [t.name for t in tasks if t.name not in DERIVED_TASKS and t.name not in extra_targets]
    if missing:
        raise GreatError(f"NYUv2 provides only {', '.join(DERIVED_TASKS)}: give the targets of "
                         f"{', '.join(missing)} as extra_targets")

    def load(split, data_dir=None, seed=0, limit=None, image_size=IMAGE_SIZE,
             target_size=TARGET_SIZE):
        """`seed` is unused: nothing about NYUv2's targets is random."""
        from great_tf.data.nyuv2 import load_nyuv2

        derived = [t.name for t in tasks if t.name in DERIVED_TASKS]
        images, targets = load_nyuv2(split, data_dir, limit, image_size, target_size, derived)
        for task in tasks:
            if task.name not in targets:
                targets[task.name] = extra_targets[task.name](split, limit, target_size)
        return images, targets

    return Benchmark(
        name=name,
        tasks=tasks,
        load=load,
        network=drn_multitask_network,
        description="TFDS nyu_depth_v2 (sparse-to-dense frames): RGB in, depth in metres and "
                    "normals derived from it out, invalid pixels masked",
        paper_rows=PAPER_ROWS if paper_rows is None else paper_rows,
        splits=("train", "validation"),
        options={"image_size": IMAGE_SIZE, "target_size": TARGET_SIZE},
        presets=PRESETS,
        method_defaults={"gradnorm": {"alpha": 1.5}},  # the paper's (and GradNorm's) NYUv2 value
        stream_pipeline=mapped_stream_dataset,
        eval_pipeline=mapped_eval_dataset,
    )


register_benchmark(nyuv2_benchmark())
