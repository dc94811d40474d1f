"""The latency gate of an ONNX model (the PyTorch track).

The source is ``vlrface.latency.sources.pick``'s, the one choice both formats share: measured
when this host is arm64 and ``latency.host_device`` names it; else, with ``latency.emulate``,
every budgeted device is emulated under qemu-user (``vlrface.latency.emulate``); else the ARM
cost model would be next, but it prices LCE flatbuffers only, so each device is ``unavailable``
and ``latency.when_unavailable`` decides the gate. This host's own single-thread onnxruntime
time is reported for information only (``export.onnx.host_ms``), never compared with a device
budget.
"""

from __future__ import annotations

import platform

from vlrface.fileio import temporary_file
from vlrface.latency.sources import Log, pick, stderr_log


def host_ms(onnx: bytes, runs: int) -> float:
    """Median single-image latency (ms) of onnxruntime on this host, after two warm-up runs."""
    from vlrface.latency.measure import onnx_ms

    return onnx_ms(onnx, runs, warmup=2)["ms"]


def emulate_bytes(onnx: bytes, devices: list[str]) -> dict:
    """``vlrface.latency.emulate`` on a model's bytes."""
    from vlrface.latency.emulate import emulate

    with temporary_file(onnx, "model.onnx") as path:
        return emulate(path, devices)


def onnx_gate(onnx: bytes, cfg, log: Log = stderr_log) -> dict:
    """The gate's report (``OnnxLatencyConfig`` ``cfg``): ``source`` (measured / emulated /
    unavailable), ``why`` it was chosen, ``passed``, per-device ``{ms, budget_ms, source,
    passed}``, the host's time and the emulation's figures (module doc)."""
    source, why = pick("auto", "onnx", host_device=cfg.host_device, emulate=cfg.emulate)
    ms_here = host_ms(onnx, cfg.runs)
    figures: dict[str, float] = {}
    emulation = None
    if source == "measured":  # one host is one device: the others stay unavailable
        figures = {cfg.host_device: ms_here}
    elif source == "emulated":
        emulation = emulate_bytes(onnx, list(cfg.budget_ms))
        figures = {d: emulation[f"latency.{d}.ms"] for d in cfg.budget_ms}
    devices = {}
    for device, budget in cfg.budget_ms.items():
        if device in figures:
            ms = figures[device]
            devices[device] = {"ms": ms, "budget_ms": budget, "source": source,
                               "passed": ms <= budget}  # fmt: skip
        else:
            devices[device] = {"ms": None, "budget_ms": budget, "source": "unavailable"}
    if figures:
        passed = all(r["passed"] for r in devices.values() if "passed" in r)
        log(f"latency {source}: {why}")
    else:
        passed = cfg.when_unavailable == "defer"
        log(f"latency unavailable: {why}; latency.when_unavailable: {cfg.when_unavailable}")
    return {
        "format": "onnx",
        "source": source if figures else "unavailable",
        "why": why,
        "passed": passed,
        "when_unavailable": cfg.when_unavailable,
        "devices": devices,
        "host": {"machine": platform.machine(), "ms": ms_here, "threads": 1, "runs": cfg.runs},
        "emulation": emulation,
    }
