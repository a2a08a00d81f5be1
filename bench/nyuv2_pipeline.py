"""Throughput of the NYUv2 input pipeline, on tfds.testing.mock_data (no data set needed).

    python -m bench.nyuv2_pipeline                     # 256 mock frames, the paper's sizes
    python -m bench.nyuv2_pipeline --examples 512 --batch-size 32 --data-dir ~/tensorflow_datasets --real

Measures (1) preparing the cache once (decode, resize, depth targets, normals) and (2) the
training pipeline afterwards: shuffled batches gathered from the memory-mapped cache and turned
into float32, as `python -m trainers.mtl --dataset nyu_depth_v2` reads them. The mock frames
are random 480x640 images and depths, so both figures are what real frames cost, less the PNG
decoding of the real TFDS copy during preparation. Each figure is the best of --rounds.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.nyuv2_pipeline",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--target-size", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the cache per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--real", action="store_true", help="read the real TFDS copy, not mock data")
    parser.add_argument("--data-dir")
    return parser.parse_args(argv)


def main(argv=None):
    import contextlib

    import tensorflow_datasets as tfds

    from great_tf.data.mapped import mapped_train_dataset
    from great_tf.data.nyuv2 import load_nyuv2

    args = parse_args(argv)
    source = contextlib.nullcontext() if args.real else tfds.testing.mock_data(num_examples=args.examples)
    with tempfile.TemporaryDirectory() as cache, source:
        start = time.perf_counter()
        data = load_nyuv2("train", args.data_dir, args.examples, args.image_size, args.target_size,
                          cache_dir=cache)
        prepare = time.perf_counter() - start
        n = len(data[0])
        print(f"prepared {n} frames ({args.image_size}x{args.image_size} in, "
              f"{args.target_size}x{args.target_size} out) in {prepare:.1f} s: "
              f"{n / prepare:.0f} frames/s, once per split")
        best = 0.0
        for r in range(args.rounds):
            batches = mapped_train_dataset(data, args.batch_size, seed=r, epochs=args.epochs)
            start, seen = time.perf_counter(), 0
            for x, _ in batches:
                seen += int(x.shape[0])
            best = max(best, seen / (time.perf_counter() - start))
        print(f"training pipeline: {best:.0f} images/s (batch {args.batch_size}, best of "
              f"{args.rounds} rounds of {args.epochs} epochs)")
    return best


if __name__ == "__main__":
    main()
