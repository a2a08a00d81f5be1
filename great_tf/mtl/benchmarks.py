"""Multi-task benchmarks by name: data, tasks, the paper's network and the paper's numbers.

`python -m trainers.mtl --dataset NAME` accepts every registered benchmark. A benchmark is one
`register_benchmark(Benchmark(...))` call, in its own module (docs/design.md#multi-task).
"""

from dataclasses import dataclass, field

from great_tf.errors import GreatError

_BENCHMARKS = {}


@dataclass(frozen=True)
class Benchmark:
    """name; tasks; `load(split, data_dir, seed, limit, **options) -> (inputs, {task: targets})`;
    `network(input_shape, tasks, width) -> (encoder, decoders)`; the paper's rows {method:
    {metric: value}}, and a one-line description of the data for table notes.

    `splits`: (training split, evaluation split) as the data set names them. `options`: {name:
    default} of the further keyword arguments of `load` (image sizes), each a trainer flag
    `--<name>`. `presets`: {preset: {setting: value}} replacing the trainer's preset for this data
    set (epochs, batch_size, width, train_limit, eval_limit, steps_per_epoch and options).
    `method_defaults`: {method: {hyperparameter: value}}: the paper's values for this data set
    where they differ from the method's own defaults. `stream_pipeline(data, batch_size, seed,
    start, stop)` (batches [start, stop) of the run's training stream, great_tf/data/pipeline.py)
    and `eval_pipeline(data, batch_size)`: tf.data over what `load` returns, None for
    great_tf.data's in-memory pipelines; use them through the methods below.
    """

    name: str
    tasks: tuple
    load: callable
    network: callable
    description: str = ""
    paper_rows: dict = field(default_factory=dict)
    splits: tuple = ("train", "test")
    options: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    method_defaults: dict = field(default_factory=dict)
    stream_pipeline: callable = None
    eval_pipeline: callable = None

    def stream_dataset(self, data, batch_size, seed, start, stop):
        """Batches [start, stop) of the training stream: `fit_resumable`'s make_stream."""
        from great_tf.data.pipeline import stream_dataset

        return (self.stream_pipeline or stream_dataset)(data, batch_size, seed, start, stop)

    def train_dataset(self, data, batch_size, seed, epochs, initial_epoch=0, steps=None):
        """The stream batches of training epochs `initial_epoch .. epochs-1`."""
        from great_tf.data.pipeline import num_examples, stream_bounds

        start, stop = stream_bounds(num_examples(data), batch_size, epochs, initial_epoch, steps)
        return self.stream_dataset(data, batch_size, seed, start, stop)

    def eval_dataset(self, data, batch_size):
        from great_tf.data import eval_dataset

        return (self.eval_pipeline or eval_dataset)(data, batch_size)

    def probe(self, data, count):
        """The first `count` examples as one batch (x, y) of NumPy arrays, as the model sees them
        (for TensorBoard callbacks)."""
        from great_tf.data import num_examples, take

        count = min(count, num_examples(data))
        batch = next(iter(self.eval_dataset(take(data, count), count)))
        return tuple(_numpy(part) for part in batch)


def _numpy(nest):
    import tensorflow as tf

    return tf.nest.map_structure(lambda t: t.numpy(), nest)


def register_benchmark(benchmark):
    _BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def available_benchmarks():
    _import_all()
    return tuple(sorted(_BENCHMARKS))


def get_benchmark(name):
    _import_all()
    if name not in _BENCHMARKS:
        raise GreatError(f"unknown multi-task data set {name!r}: choose one of "
                         f"{', '.join(sorted(_BENCHMARKS))}")
    return _BENCHMARKS[name]


def _import_all():
    import importlib
    import pkgutil

    import great_tf.mtl.datasets as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
