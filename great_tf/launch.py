"""Runs one command as N multi-worker processes on this machine (MultiWorkerMirroredStrategy).

`python -m trainers.launch` is its command line (docs/design.md#distribution):

    python -m trainers.launch --workers 2 -- python -m trainers.mtl --method great --epochs 2

Each worker is the command after `--`, started with its own TF_CONFIG:

    {"cluster": {"worker": ["localhost:P0", "localhost:P1"]}, "task": {"type": "worker", "index": i}}

on free local ports; the trainers pick `--strategy multiworker` whenever TF_CONFIG is set. Worker
0 is the chief: it alone writes checkpoints, TensorBoard logs and tables. Every output line is
streamed with a `[worker i]` prefix. If a worker fails (or --timeout passes), the others (which
would wait forever in their collective ops) are stopped and the launcher exits non-zero with one
line that names the worker.

On several machines, set TF_CONFIG by hand on each (same "cluster" list of host:port, its own
"index") and start the same command everywhere.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count):
    """`count` distinct free TCP ports on localhost (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def stream(index, pipe, lock):
    for line in iter(pipe.readline, ""):
        with lock:
            sys.stdout.write(f"[worker {index}] {line}")
            sys.stdout.flush()
    pipe.close()


def describe(code):
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def stop(procs):
    """SIGTERM to every live worker's process group, SIGKILL to those still alive after 5 s."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while grace and time.time() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.1)
    for p in procs:
        p.wait()


def interrupt(signum, frame):
    raise KeyboardInterrupt


def launch(workers, command, timeout=None):
    """Runs `command` as `workers` workers; returns the exit code (0 when every worker succeeded)."""
    signal.signal(signal.SIGTERM, interrupt)  # a terminated launcher still stops its workers
    ports = free_ports(workers)
    lock = threading.Lock()
    procs, threads = [], []
    try:
        for i in range(workers):
            env = dict(os.environ, TF_CONFIG=tf_config(ports, i), PYTHONUNBUFFERED="1")
            proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            procs.append(proc)
            thread = threading.Thread(target=stream, args=(i, proc.stdout, lock), daemon=True)
            thread.start()
            threads.append(thread)
        start = time.time()
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                message = f"worker {i} {describe(code)}; stopping the other workers"
                break
            if all(c == 0 for c in codes):
                message = None
                break
            if timeout and time.time() - start > timeout:
                message = f"the workers did not finish within --timeout {timeout:g} s; stopping them"
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        message = "interrupted; stopping the workers"
    except OSError as err:
        message = f"cannot start {command[0]!r}: {err}"
    stop(procs)
    for thread in threads:
        thread.join(timeout=5)
    if message is None:
        return 0
    print(f"launch: error: {message}", file=sys.stderr, flush=True)
    return 1
