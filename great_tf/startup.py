"""A quiet TensorFlow start-up for the command-line entry points (trainers, bench, tuning).

TensorFlow 2.21 logs through absl before absl is initialised, and those lines (oneDNN, "Could not
find cuda drivers", "All log messages before absl::InitializeLog() ...") ignore
TF_CPP_MIN_LOG_LEVEL; two of its shared libraries each print them, so every command started
with the same block twice. `quiet_tensorflow_startup()`, called by the packages' `__init__`
before anything imports TensorFlow,

- sets TF_CPP_MIN_LOG_LEVEL (default 2: errors only) unless the user set one, which silences
  what TensorFlow logs after its start-up;
- the first time `tensorflow` is imported (by us, Keras or TFDS; `--help` of a command that never
  imports it pays nothing), sends the process's stderr to a temporary file for the duration of
  that import and then writes back every line except the C++ log lines below the level, so
  Python warnings and errors raised while importing still reach the user. On a machine without
  CUDA drivers, the "failed call to cuInit" error that follows "Could not find cuda drivers" is
  dropped too (TensorFlow's device search is run inside the filter for that).

With TF_CPP_MIN_LOG_LEVEL=0 nothing is filtered.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

DEFAULT_LEVEL = "2"
SEVERITIES = "IWEF"  # absl's INFO, WARNING, ERROR, FATAL, the order of TF_CPP_MIN_LOG_LEVEL
# absl:      "I0000 00:00:1795697146.722132   10170 port.cc:153] ..."
# older TF:  "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ..."
ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] ")
TSL_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) \S+:\d+\] ")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# On a machine without CUDA drivers, TensorFlow first says so (INFO), then reports the failed
# cuInit as an ERROR when it first lists devices: the second line restates the first.
NO_CUDA_DRIVER = "Could not find cuda drivers"
CUINIT_FAILED = "failed call to cuInit"


def log_level():
    """The TF_CPP_MIN_LOG_LEVEL in force, as an int (0 when unreadable: then nothing is hidden)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def keep_line(line, level):
    """False for a C++ log line whose severity TF_CPP_MIN_LOG_LEVEL `level` hides, and for absl's
    "before InitializeLog" preamble once INFO is hidden; True for every other line."""
    if level <= 0:
        return True
    if line.startswith(ABSL_PREAMBLE):
        return False
    match = ABSL_LINE.match(line) or TSL_LINE.match(line)
    return match is None or SEVERITIES.index(match.group(1)) >= level


def kept_lines(text, level):
    """The lines of `text` that `keep_line` keeps, less the cuInit failure of a driverless machine."""
    lines = text.splitlines(keepends=True)
    no_driver = level > 0 and any(NO_CUDA_DRIVER in line for line in lines)
    return [line for line in lines if keep_line(line, level) and not (no_driver and CUINIT_FAILED in line)]


@contextlib.contextmanager
def filtered_stderr(level):
    """Runs the body with file descriptor 2 captured, then replays the lines `keep_line` keeps."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = "".join(kept_lines(text, level))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` inside `filtered_stderr`, then steps aside."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader  # the module keeps its own loader
        with filtered_stderr(log_level()):
            self.loader.exec_module(module)
            # Listing the devices (which leaves them configurable) makes TensorFlow look for CUDA
            # now, inside the filter, rather than at the first operation.
            with contextlib.suppress(Exception):
                module.config.list_physical_devices("GPU")


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, through the other finders, and wraps its loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: later imports are plain
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_startup(default_level=DEFAULT_LEVEL):
    """Sets TF_CPP_MIN_LOG_LEVEL unless the user did, and filters TensorFlow's import-time lines.

    Call it before TensorFlow is imported; afterwards it only sets the environment variable
    (which the already loaded libraries no longer read). Calling it twice installs one filter.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", default_level)
    if "tensorflow" in sys.modules or log_level() <= 0:
        return
    if not any(isinstance(finder, QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())
