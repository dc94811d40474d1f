"""What vlrface lets the libraries under it print: one place for log levels, filters and the
environment defaults that keep runs readable, each with the reason it carries no information.

``quiet()`` runs when ``vlrface`` is imported (before TensorFlow can be). Every filter matches
one known message and nothing else: any other warning or error of the same library still shows.

- TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA drivers on a CPU host, TensorRT):
  ``TF_CPP_MIN_LOG_LEVEL=2`` (a default: an exported value wins) keeps C++ warnings and errors
  only. Three errors remain that TensorFlow 2.16 prints on every import on a host without CUDA
  ("Unable to register cuFFT/cuDNN/cuBLAS factory: ... already been registered"): the import
  runs under ``native_stderr_filtered``, which drops exactly those lines.
- XLA's absl lines (``I0000 ... XLA service ... initialized``, ``Compiled cluster using XLA!``)
  come from absl's C++ logging, which TF_CPP_MIN_LOG_LEVEL does not reach; they print once per
  process, at its first XLA compile: the first training step, or the first run of a model
  with a grouped convolution (Keras XLA-compiles those on a CPU). Both run their first call
  under the same filter (``first_call_filtered``): the training step and ``KerasEmbedder``,
  which every Keras inference uses (checkpoint import, embedding tables, evaluation, export
  parity, the CLI).
- grappler's "remapper failed: ... fanout '.../unary_ops_composition' exist for missing node"
  (an E line) at the first trace of a BinaryFaceNet: TF 2.16's remapper cannot fuse its PReLU;
  the failed pass is discarded (the same embeddings), and it comes in the same first call.
- AutoGraph's "could not transform <bound method QuantizedVariable.from_variable>" ("Please
  report this to the TensorFlow team"): larq's quantized-variable constructor is called inside
  the training step; AutoGraph leaves it as plain Python, which is what it is.
- ZenML's MLflow tracker, after every step: "Failed to disable MLflow autologging for the
  following frameworks: ['fastai']" when the framework is not installed (nothing to disable).
- google.api_core's FutureWarning about Python 3.11's end of support (imported by GX).
- "Compiled the loaded model, but the compiled metrics have yet to be built": LCE's converter
  reloads the model; vlrface never uses Keras' compiled metrics.
- MLflow, saving the served pyfunc: "Failed to infer model signature" (vlrface's pyfunc parses
  and checks its own requests, naming the row and column), and its "Downloading artifacts" bars
  for the few small files a registration reads back (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import warnings

ENV_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ INFO and WARNING lines
    "TF_USE_LEGACY_KERAS": "1",  # larq and LCE need Keras 2 (not noise: a requirement)
    # MLflow's "Downloading artifacts" bars for the few small files a registration reads back
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# lines a C++ library writes straight to the process's stderr (file descriptor 2)
NATIVE_NOISE = re.compile(
    r"Unable to register cu(FFT|DNN|BLAS) factory: Attempting to register factory for plugin"
    r"|All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^I0000 .*\] (XLA service 0x[0-9a-f]+ initialized for platform"
    r"|  StreamExecutor device \(\d+\): Host, Default Version"
    r"|Compiled cluster using XLA!)"
    # grappler's remapper on BinaryFaceNet's PReLU (TF 2.16): the pass fails, the meta optimizer
    # keeps the graph it had, so the results are the same; printed at a model's first trace
    r"|remapper failed: INVALID_ARGUMENT: Mutation::Apply error: fanout '[^']*"
    r"unary_ops_composition' exist for missing node"
)

# (logger, message pattern, why it carries nothing)
LOG_NOISE = (
    (
        "tensorflow",
        re.compile(r"AutoGraph could not transform <bound method QuantizedVariable\.from_variable"),
    ),
    (  # LCE's converter reloads the model; vlrface never uses Keras' compiled metrics
        "tensorflow",
        re.compile(r"Compiled the loaded model, but the compiled metrics have yet to be built"),
    ),
    (  # the served pyfunc parses and checks its own request (vlrface.serving_model)
        "mlflow.pyfunc",
        re.compile(r"Failed to infer model signature: Type hint .* cannot be used to infer"),
    ),
)

_lock = threading.RLock()  # re-entrant: a filtered block may nest another
_done = False


class _DropMatching(logging.Filter):
    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return not self.pattern.search(record.getMessage())
        except Exception:  # noqa: BLE001 - a record that cannot render is not ours to drop
            return True


class _UninstalledAutologging(logging.Filter):
    """ZenML's "Failed to disable MLflow autologging for the following frameworks: [...]" when
    none of the frameworks is installed: there was no autologging to disable."""

    MESSAGE = re.compile(r"Failed to disable MLflow autologging for the following frameworks: (.*)")

    def filter(self, record: logging.LogRecord) -> bool:
        match = self.MESSAGE.search(str(record.msg))
        if not match:
            return True
        names = re.findall(r"'(\w+)'", match.group(1))
        return any(importlib.util.find_spec(n) is not None for n in names) or not names


@contextlib.contextmanager
def native_stderr_filtered():
    """Run the block with file descriptor 2 captured, then write back every line that is not
    ``NATIVE_NOISE`` (in order): C++ output that TF_CPP_MIN_LOG_LEVEL cannot reach. Python's
    own ``sys.stderr`` writes go through fd 2 as well and are written back the same way."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured): leave it
        yield
        return
    with _lock, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                if not NATIVE_NOISE.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _FilteredTensorflowImport(importlib.abc.MetaPathFinder):
    """Wraps the first ``import tensorflow`` (whoever imports it: vlrface, larq, MLflow, ZenML)
    in ``native_stderr_filtered``."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        try:
            sys.meta_path.remove(self)  # once, and let the real finders find it
        except ValueError:  # another thread got here first: it wraps the import
            return None
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real = spec.loader.exec_module

        def exec_module(module):
            with native_stderr_filtered():
                real(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet() -> None:
    """Install the environment defaults, filters and the filtered TensorFlow import (once)."""
    global _done
    if _done:
        return
    _done = True
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name, pattern in LOG_NOISE:
        logging.getLogger(name).addFilter(_DropMatching(pattern))
    logging.getLogger(
        "zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker"
    ).addFilter(_UninstalledAutologging())
    warnings.filterwarnings(
        "ignore",
        message=r"You are using a Python version .* google\.api_core",
        category=FutureWarning,
    )
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _FilteredTensorflowImport())


def first_call_filtered(fn):
    """``fn`` whose first call runs under ``native_stderr_filtered``: the first call of an
    XLA-compiled ``tf.function`` (tracing and compiling) prints XLA's absl lines."""
    first = [True]

    def call(*args, **kwargs):
        if first[0]:
            first[0] = False
            with native_stderr_filtered():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    call.__wrapped__ = fn
    return call
