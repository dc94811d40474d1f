"""The latency gate of an ONNX model (the PyTorch track).

The ARM cost model estimates LCE flatbuffers and does not apply to ONNX. A device figure is
measured only when this host is arm64 and ``latency.host_device`` names it; else, with
``latency.emulate``, every budgeted device is emulated under qemu-user
(``vlrface.latency.emulate``); otherwise each is ``unavailable`` and ``latency.when_unavailable``
decides the gate. This host's own single-thread onnxruntime time is reported for information
only (``export.onnx.host_ms``), never compared with a device budget.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vlrface.embedders import ONNXEmbedder


def host_ms(onnx: bytes, runs: int, threads: int = 1) -> float:
    """Median single-image latency (ms) of onnxruntime on this host, after two warm-up runs."""
    embedder = ONNXEmbedder(onnx, num_threads=threads)
    size = embedder.preprocessing.input_size
    x = np.zeros((1, size, size, 3), np.float32)
    for _ in range(2):
        embedder(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        embedder(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def emulate_bytes(onnx: bytes, devices: list[str]) -> dict:
    """``vlrface.latency.emulate`` on a model's bytes."""
    from vlrface.latency.emulate import emulate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx)
        return emulate(path, devices)


def onnx_gate(onnx: bytes, cfg) -> dict:
    """The gate's report (``OnnxLatencyConfig`` ``cfg``): ``source`` (measured / emulated /
    unavailable), ``passed``, per-device ``{ms, budget_ms, source, passed}``, the host's time
    and the emulation's figures (module doc)."""
    from vlrface.latency.measure import on_arm

    ms_here = host_ms(onnx, cfg.runs)
    devices, measured = {}, False
    for device, budget in cfg.budget_ms.items():
        if on_arm() and cfg.host_device == device:
            devices[device] = {"ms": ms_here, "budget_ms": budget, "source": "measured",
                               "passed": ms_here <= budget}  # fmt: skip
            measured = True
        else:
            devices[device] = {"ms": None, "budget_ms": budget, "source": "unavailable"}
    emulation = None
    if not measured and cfg.emulate:
        emulation = emulate_bytes(onnx, list(cfg.budget_ms))
        for device, budget in cfg.budget_ms.items():
            ms = emulation[f"latency.{device}.ms"]
            devices[device] = {"ms": ms, "budget_ms": budget, "source": "emulated",
                               "passed": ms <= budget}  # fmt: skip
    if measured or emulation:
        passed = all(r["passed"] for r in devices.values() if "passed" in r)
        source = "measured" if measured else "emulated"
    else:
        passed = cfg.when_unavailable == "defer"
        source = "unavailable"
    return {
        "format": "onnx",
        "source": source,
        "passed": passed,
        "when_unavailable": cfg.when_unavailable,
        "devices": devices,
        "host": {"machine": platform.machine(), "ms": ms_here, "threads": 1, "runs": cfg.runs},
        "emulation": emulation,
    }
