"""Two checks of a trained classifier that found real problems here (docs/results.md): accuracy
with BatchNorm's moving statistics against its batch statistics, and the scale of the logits.

    python -m great_tf.diagnostics runs/defense/mnist/greace/model.keras --dataset mnist

- A large gap between inference-mode accuracy and training-mode accuracy (BatchNorm normalizing
  each batch with its own statistics) means that the moving statistics do not describe the
  inputs. FGSM adversarial training with separate clean and adversarial forwards did this.
- Logits far from zero with little spread across classes come from a loss term that keeps
  pushing every logit one way. GREACE with a large beta does this.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class ModelCheck:
    inference_accuracy: float   # %, moving statistics
    batch_stats_accuracy: float  # %, every batch normalized with its own statistics
    mean_largest_logit: float    # mean over examples of max_k |a_k|
    mean_logit_spread: float     # mean over examples of the std of a across classes

    def lines(self):
        gap = self.batch_stats_accuracy - self.inference_accuracy
        return [
            f"clean accuracy: {self.inference_accuracy:.2f} % with moving BatchNorm statistics, "
            f"{self.batch_stats_accuracy:.2f} % with batch statistics (gap {gap:+.2f} points"
            + ("; the moving statistics do not describe these inputs)" if gap > 5 else ")"),
            f"logits: mean largest |a| {self.mean_largest_logit:.1f}, mean spread across classes "
            f"{self.mean_logit_spread:.2f}",
        ]


def check_model(model, x, y, batch_size=256):
    """The `ModelCheck` of `model` (logits out) on images `x` with labels `y`."""
    inference = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                                for i in range(0, len(x), batch_size)])
    # Training-mode calls update the moving statistics: put them back afterwards.
    saved = [v.numpy() for v in model.non_trainable_variables]
    try:
        batch_stats = np.concatenate([np.asarray(model(x[i:i + batch_size], training=True))
                                      for i in range(0, len(x), batch_size)])
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)
    return ModelCheck(
        inference_accuracy=float(100.0 * np.mean(inference.argmax(1) == y)),
        batch_stats_accuracy=float(100.0 * np.mean(batch_stats.argmax(1) == y)),
        mean_largest_logit=float(np.abs(inference).max(1).mean()),
        mean_logit_spread=float(inference.std(1).mean()))


def main(argv=None):
    from great_tf.data import load_classification
    from great_tf.saving import check_input_shape, load_model
    from trainers import flags

    parser = flags.OneLineParser(prog="python -m great_tf.diagnostics", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a saved classifier (.keras) that outputs logits")
    parser.add_argument("--dataset", required=True, help="a prepared TFDS image-classification set")
    parser.add_argument("--limit", type=flags.positive_int, default=2000,
                        help="first N test images (default 2000)")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    x, y = load_classification(args.dataset, "test", args.data_dir, args.limit)
    check_input_shape(model, x.shape[1:], args.model, args.dataset)
    result = check_model(model, x, y)
    print(f"{args.model} on the first {len(y)} {args.dataset} test images:")
    print("\n".join("  " + line for line in result.lines()))
    return result


if __name__ == "__main__":
    from great_tf.runs import run_cli
    from great_tf.startup import quiet_tensorflow_startup

    quiet_tensorflow_startup()  # before main imports TensorFlow, as the trainers' packages do
    run_cli(main, interrupted_hint=None)
