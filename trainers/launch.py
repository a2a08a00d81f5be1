"""Runs one trainer as N multi-worker processes on this machine (great_tf.launch).

    python -m trainers.launch --workers 2 -- python -m trainers.mtl --method great --epochs 2

Each worker is the command after `--`, with its own TF_CONFIG on free local ports; worker 0 is the
chief. If a worker fails (or --timeout passes), the others are stopped and the launcher exits
non-zero with one line that names the worker.
"""

import argparse
import sys

from great_tf.launch import launch


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m trainers.launch",
                                     usage="python -m trainers.launch [--workers N] [--timeout S] -- COMMAND ...",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, help="stop every worker after this many seconds")
    # The launcher's own flags come before `--`, the worker command after it; without `--`, the
    # flags are still parsed first so that --help prints the usage (and exits 0).
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if split == len(argv):
        parser.exit(2, "launch: error: give the worker command after `--`, e.g. "
                       "`python -m trainers.launch --workers 2 -- python -m trainers.mtl`\n")
    command = argv[split + 1:]
    if not command:
        parser.exit(2, "launch: error: the worker command after `--` is empty\n")
    if args.workers < 1:
        parser.exit(2, f"launch: error: --workers must be at least 1, got {args.workers}\n")
    return launch(args.workers, command, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
