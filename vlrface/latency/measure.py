"""Measured ARM latency (``latency.source = measured``): the model run on a real arm64 host.

LCE flatbuffers run under LCE's ``lce_benchmark_model`` (the aarch64 build LCE publishes with
each release, or one built from source: docs/arm-latency.md), single-threaded; its output is
TFLite's benchmark tool's, from which the average inference time is read. ONNX models run under
onnxruntime's aarch64 build, one intra- and one inter-op thread. Both run only where the host
is arm64 (``uname -m`` = ``aarch64``/``arm64``), the case of a user's board or a pipeline step
pinned to an arm64 Kubernetes node; elsewhere ``NotOnArmError`` says so and the caller falls back
to the cost model (``estimate``).
"""

from __future__ import annotations

import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

from vlrface.errors import VlrfaceError

ARM_MACHINES = ("aarch64", "arm64")
# C++'s default stream format, as TF-Lite's benchmark tool prints: 181841, 1.07638e+06, 38.104
_NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_TIMINGS = re.compile(
    rf"Inference timings in us:\s*Init:\s*(?P<init>{_NUMBER}),\s*First inference:\s*"
    rf"(?P<first>{_NUMBER}),\s*Warmup \(avg\):\s*(?P<warmup>{_NUMBER}),\s*"
    rf"Inference \(avg\):\s*(?P<avg>{_NUMBER})"
)
_AVG_US = re.compile(rf"Inference \(avg\):\s*({_NUMBER})")
_COUNT = re.compile(rf"^(?:INFO:\s*)?count=(\d+)\b(?:.*?\bavg=({_NUMBER}))?", re.M)
_ERROR = re.compile(r"^ERROR:\s*(.+?)\s*$", re.M)


class NotOnArmError(VlrfaceError):
    """A measured latency was asked for on a host that is not arm64."""


def on_arm() -> bool:
    return platform.machine().lower() in ARM_MACHINES


def _require_arm() -> None:
    if not on_arm():
        raise NotOnArmError(
            f"measured latency needs an arm64 host; this one is {platform.machine()} "
            "(use the estimated backend, or run the latency step on an arm64 node)"
        )


def benchmark_summary(text: str, source: str = "lce_benchmark_model") -> dict:
    """The summary of TF-Lite benchmark-tool output (LCE's ``lce_benchmark_model``): the
    ``Inference timings`` line in us, the run count of each ``count=`` line (warm-up, then the
    regular runs) and any ``ERROR:`` lines. Raises naming ``source`` and its first error when
    there is no average inference time."""
    errors = _ERROR.findall(text)
    timings = _TIMINGS.search(text)
    found = _AVG_US.findall(text)
    if not found:
        found = [avg for _, avg in _COUNT.findall(text) if avg]
    if not found:
        why = f": {errors[0]}" if errors else ""
        raise VlrfaceError(f"{source}: no 'Inference (avg)' timing in its output{why}")
    summary = {
        "inference_avg_us": float(found[-1]),
        "counts": [int(n) for n, _ in _COUNT.findall(text)],
        "errors": errors,
    }
    if timings:
        summary.update(
            init_us=float(timings["init"]),
            first_inference_us=float(timings["first"]),
            warmup_avg_us=float(timings["warmup"]),
        )
    return summary


def parse_benchmark_output(text: str, source: str = "lce_benchmark_model") -> float:
    """Average inference time in ms from TFLite benchmark-tool output."""
    return benchmark_summary(text, source)["inference_avg_us"] / 1000.0


def measure_lce(tflite: str | Path, binary: str | Path, runs: int = 50) -> dict:
    """Run ``lce_benchmark_model`` single-threaded on ``tflite``; the average ms per inference."""
    _require_arm()
    binary = Path(binary)
    if not binary.is_file():
        raise VlrfaceError(f"{binary}: lce_benchmark_model not found")
    cmd = [str(binary), f"--graph={tflite}", "--num_threads=1", f"--num_runs={runs}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        errors = re.findall(r"^ERROR:\s*(.+?)\s*$", done.stdout + done.stderr, re.M)
        tail = (errors or (done.stderr or done.stdout).strip().splitlines() or ["no output"])[0]
        raise VlrfaceError(f"{binary}: failed on {tflite} (exit {done.returncode}): {tail}")
    from vlrface.provenance import sha256_file

    return {
        "ms": parse_benchmark_output(done.stdout + done.stderr, str(binary)),
        "runs": runs,
        "tool": str(binary),
        "binary_sha256": sha256_file(binary),
        "host": platform.machine(),
    }


def median_ms(call, runs: int, warmup: int = 1) -> float:
    """Median wall time (ms) of ``call()`` over ``runs`` calls, after ``warmup`` untimed ones:
    the one timing loop of every host-side latency figure (the ONNX gate's ``host_ms``, measured
    ONNX latency, the benchmarks' x86 figures)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times))


def onnx_ms(model: str | Path | bytes, runs: int = 50, warmup: int = 5) -> dict:
    """Median ms per inference of an ONNX model (a path or its bytes) under onnxruntime on this
    host, whatever it is: one intra- and one inter-op thread (``ONNXEmbedder``'s session), batch 1,
    a fixed seeded input."""
    import numpy as np
    import onnxruntime as ort

    from vlrface.embedders import ONNXEmbedder

    session = ONNXEmbedder(model, num_threads=1).session
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return {
        "ms": median_ms(lambda: session.run(None, feed), runs, warmup),
        "runs": runs,
        "tool": f"onnxruntime {ort.__version__}",
        "host": platform.machine(),
    }


def measure_onnx(model: str | Path | bytes, runs: int = 50, warmup: int = 5) -> dict:
    """Measured latency (``onnx_ms``) of an ONNX model: only on an arm64 host."""
    _require_arm()
    return onnx_ms(model, runs, warmup)
