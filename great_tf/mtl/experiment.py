"""Running a multi-task comparison as the field does: every method over several seeds, next to
the single-task baselines that Δm needs (docs/design.md#mtl-methods).

A run trains one network by the benchmark's recipe and evaluates it on the test split; it lives
in its own folder under `--logdir` (checkpoints, TensorBoard logs, `config.json`, `result.json`):

    <logdir>/<method>/                  one seed (--seeds 1, the default)
    <logdir>/<method>/seed<k>/          several seeds, k = seed, seed + 1, ...
    <logdir>/single[/seed<k>]/<task>/   the single-task baselines, one network per task

The single-task baseline of a task is the same encoder and that task's decoder alone, trained
with equal weights on that one task (`train_single`). Its results are reused by every later
command on the same `--logdir` whose settings match (every key of `config.json`), also without
`--resume`; the other methods restart unless `--resume` is given, as before.

Seeds vary the initialisation, the order of the training data, and a method's own `seed`
hyperparameter (PCGrad's task order, RLW's draws): run k adds k to each. The data set itself
(its noise, for noisy CIFAR-10) comes from `--seed` alone, so every run is tested on the same
examples.

`args` is the trainer's namespace (`trainers/mtl.py`); `great_tf.runs` reads the same fields.
"""

import copy
import os

from great_tf.errors import GreatError
from great_tf.mtl.report import SINGLE

SEED_HYPERPARAMETER = "seed"


def available_choices():
    """Every method name the trainer accepts: the registered methods and "single"."""
    from great_tf.mtl.network import available_methods

    return (SINGLE, *available_methods())


def selected_methods(method=None, methods=None):
    """The methods to run, in order: `methods` (a list), or `method` (a name or "all": the
    single-task baselines, then every registered method)."""
    from great_tf.mtl.network import available_methods

    if methods and method not in (None, "all"):
        raise GreatError(f"use --method or --methods, not both (got --method {method} and "
                         f"--methods {','.join(methods)})")
    if methods:
        unknown = [m for m in methods if m not in available_choices()]
        if unknown:
            raise GreatError(f"unknown method {', '.join(map(repr, unknown))}: choose from "
                             f"{', '.join(available_choices())}")
        return tuple(dict.fromkeys(methods))
    if method in (None, "all"):
        return (SINGLE, *available_methods())
    if method not in available_choices():
        raise GreatError(f"unknown method {method!r}: choose from {', '.join(available_choices())}")
    return (method,)


def run_seeds(seed, count):
    return tuple(range(seed, seed + count))


def run_folder(logdir, method, seed, seeds=1, task=None):
    """The folder of one run (see the module docstring)."""
    path = os.path.join(logdir, method)
    if seeds > 1:
        path = os.path.join(path, f"seed{seed}")
    return os.path.join(path, task) if task else path


def seeded_args(args, seed):
    """A copy of `args` for the run with `seed` (the data keep `args.seed`)."""
    run = copy.copy(args)
    run.seed = seed
    return run


def seeded_hyperparameters(settings, offset):
    """A method's hyperparameters for run `offset` of a seed series: its own seed moves too."""
    settings = dict(settings)
    if SEED_HYPERPARAMETER in settings:
        settings[SEED_HYPERPARAMETER] = int(settings[SEED_HYPERPARAMETER]) + offset
    return settings


def run_config_extra(args, run_seed, method, settings, task=None):
    """What `config.json` records beyond the common settings: the method, its hyperparameters,
    the benchmark's options, the single-task baseline's task, the data seed if it differs."""
    extra = {"method": method, **{f"{method}_{k}": v for k, v in settings.items()}}
    extra.update(getattr(args, "options", None) or {})
    if task:
        extra["task"] = task
    if run_seed != args.seed:
        extra["data_seed"] = args.seed
    return extra


def quiet_retracing_warnings():
    """Drops TensorFlow's "triggered tf.function retracing" warnings: every run builds its own
    model, whose train function Keras traces anew, and TensorFlow counts those as retracings of
    one function. Other warnings still show."""
    import logging

    import tensorflow as tf

    class NoRetracing(logging.Filter):
        def filter(self, record):
            return "triggered tf.function retracing" not in record.getMessage()

    logger = tf.get_logger()
    if not any(isinstance(f, NoRetracing) or type(f).__name__ == "NoRetracing" for f in logger.filters):
        logger.addFilter(NoRetracing())


# -- data ------------------------------------------------------------------------------------------

def load_data(args, benchmark):
    """(train, test) of `benchmark`: its training and evaluation splits, with `--seed`, the
    limits and the benchmark's options."""
    train_split, test_split = benchmark.splits
    options = getattr(args, "options", None) or {}
    print(f"loading {args.dataset} ({train_split} and {test_split} splits)...", flush=True)
    train = benchmark.load(train_split, args.data_dir, args.seed, args.train_limit, **options)
    test = benchmark.load(test_split, args.data_dir, args.seed, args.eval_limit, **options)
    return train, test


def training_stream(benchmark, train, args):
    """What `fit_resumable` trains on: the arrays (great_tf.data's stream), or the benchmark's
    own stream pipeline as `make_stream(start, stop)`."""
    if benchmark.stream_pipeline is None:
        return train
    return lambda start, stop: benchmark.stream_dataset(train, args.batch_size, args.seed, start, stop)


def callbacks(benchmark, run_dir, test, tasks):
    from great_tf.summaries import MultiTaskSummaries

    probe = benchmark.probe(test, 32)
    found = [MultiTaskSummaries(run_dir, probe=probe)]
    if any(hasattr(task, "images") for task in tasks):
        from great_tf.dense_summaries import DensePredictionImages

        found.append(DensePredictionImages(run_dir, probe, tasks))
    return found


# -- one run ---------------------------------------------------------------------------------------

def train_network(args, benchmark, data, run_dir, method, tasks, settings, config_extra):
    """Trains `method` on `tasks` in `run_dir` (resuming if asked) and evaluates it; returns
    {table column: value} with "train s" and "images/s". Reuses a finished run's result.json
    with --resume."""
    import keras

    from great_tf import mtl, runs
    from great_tf.data import num_examples

    train, test = data
    name = os.path.relpath(run_dir, args.logdir)
    runs.prepare_run_dir(run_dir, args, config_extra)
    done = runs.load_result(run_dir) if runs.resuming(args) else None
    if done is not None:
        print(f"[{name}] finished earlier, result kept: {run_dir}", flush=True)
        return done
    keras.utils.set_random_seed(args.seed)
    steps = runs.epoch_steps(num_examples(train), args)
    model = runs.build_in_scope(args, lambda: mtl.compile_mtl(
        mtl.build_mtl_model(method, train[0].shape[1:], tasks, args.width,
                            network=benchmark.network, **settings), steps, args.epochs))
    test_ds = benchmark.eval_dataset(test, args.batch_size)
    print(f"[{name}] training {args.epochs} epochs of {steps} "
          f"steps, batch {args.batch_size}, width {args.width}, seed {args.seed}; logs in {run_dir}",
          flush=True)
    seconds, epochs = runs.fit_resumable(model, run_dir, args, training_stream(benchmark, train, args),
                                         test_ds, args.epochs, steps,
                                         callbacks(benchmark, run_dir, test, tasks))
    scores = model.evaluate(test_ds, return_dict=True, verbose=0)
    result = {}
    for task in tasks:
        result.update({label: float(scores[name]) for name, label in task.metric_labels().items()})
    trained = epochs * steps * args.batch_size
    result.update({"train s": round(seconds, 1),
                   "images/s": round(trained / seconds, 1) if seconds else None})
    runs.save_result(run_dir, result)
    return result


def train_method(args, benchmark, data, method, seed, settings, offset=0):
    """One multi-task run of `method` with `seed`: its row of the comparison."""
    run_args = seeded_args(args, seed)
    settings = seeded_hyperparameters(settings, offset)
    run_dir = run_folder(args.logdir, method, seed, args.seeds)
    result = train_network(run_args, benchmark, data, run_dir, method, benchmark.tasks, settings,
                           run_config_extra(args, seed, method, settings))
    own = {k: v for k, v in result.items() if k not in ("method", "seed")}
    return {"method": method, "seed": seed, **own}


# -- the single-task baselines ---------------------------------------------------------------------

def cached_result(run_args, folders, config_extra):
    """(folder, result) of the first of `folders` holding a finished run with exactly these
    settings (every key of its config.json), else (None, None)."""
    from great_tf import runs

    expected = runs.run_config(run_args, config_extra)
    for folder in dict.fromkeys(folders):
        config = runs.read_json(os.path.join(folder, runs.CONFIG_NAME))
        if config == expected:
            result = runs.load_result(folder)
            if result is not None:
                return folder, result
    return None, None


def single_folders(args, seed, task):
    """Where the single-task run of `task` with `seed` may be: this command's layout first, then
    the other one (a baseline trained by a command with another --seeds)."""
    return [run_folder(args.logdir, SINGLE, seed, n, task) for n in (args.seeds, 1, 2)]


def single_row(seed, results):
    """The single-task baselines' row: every task's metrics, the sum of their training times."""
    row = {"method": SINGLE, "seed": seed}
    for result in results:
        row.update({k: v for k, v in result.items() if k not in ("train s", "images/s")})
    row["train s"] = round(sum(r.get("train s") or 0.0 for r in results), 1)
    row["images/s"] = None  # several networks: no one throughput
    return row


def train_single(args, benchmark, data, seed):
    """The single-task baselines with `seed`: one network per task (the encoder and that task's
    decoder, equal weights on the one task), each reused if already trained with these settings.
    Returns one row with every task's metrics."""
    run_args = seeded_args(args, seed)
    results = []
    for task in benchmark.tasks:
        extra = run_config_extra(args, seed, SINGLE, {}, task.name)
        folders = single_folders(args, seed, task.name)
        found, result = cached_result(run_args, folders, extra)
        if result is not None:
            print(f"[single/{task.name}] trained earlier with these settings, result reused: {found}",
                  flush=True)
        else:
            result = train_network(run_args, benchmark, data, folders[0], "equal", (task,), {}, extra)
        results.append(result)
    return single_row(seed, results)


def cached_single_rows(args, benchmark):
    """The single-task rows of every seed of the series already trained in `args.logdir` with
    these settings (Δm without training them again); [] if any of them is missing."""
    rows = []
    for seed in run_seeds(args.seed, args.seeds):
        run_args = seeded_args(args, seed)
        results = [cached_result(run_args, single_folders(args, seed, task.name),
                                 run_config_extra(args, seed, SINGLE, {}, task.name))[1]
                   for task in benchmark.tasks]
        if any(r is None for r in results):
            return []
        rows.append(single_row(seed, results))
    return rows


# -- the comparison --------------------------------------------------------------------------------

def run_comparison(args, benchmark, methods, hyperparameters, data=None):
    """Trains every method of `methods` ("single" included) for each of `args.seeds` seeds
    starting at `args.seed` (seed by seed, the single-task baselines first); returns the
    per-seed rows. `hyperparameters`: {method: {name: value}}."""
    import gc

    quiet_retracing_warnings()
    data = data if data is not None else load_data(args, benchmark)
    rows = []
    order = [m for m in methods if m == SINGLE] + [m for m in methods if m != SINGLE]
    for offset, seed in enumerate(run_seeds(args.seed, args.seeds)):
        for method in order:
            if method == SINGLE:
                rows.append(train_single(args, benchmark, data, seed))
            else:
                rows.append(train_method(args, benchmark, data, method, seed,
                                         hyperparameters.get(method, {}), offset))
            gc.collect()  # the finished run's model and traced steps
    return rows
