"""The one choice of latency source for both formats, and the LCE gate with its fallback.

Sources, best first (``latency.<device>.source``):

* ``measured``: on this host, when it is arm64 and the configuration names which budgeted
  device this host is (LCE: LCE's benchmark binary, ``measure.measure_lce``; ONNX: onnxruntime,
  ``measure``/``latency.onnx``);
* ``emulated``: under ``qemu-aarch64`` with the instruction-counting plugin (LCE: the aarch64
  benchmark binary when ``latency.benchmark_binary`` is set, ``emulate_lce``; ONNX: onnxruntime's
  aarch64 build when ``latency.emulate`` asks for it, ``emulate``);
* ``estimated``: the per-op ARM cost model (``costmodel``, ``estimate``), LCE flatbuffers only;
  an ONNX model with neither of the above is ``unavailable``.

``pick`` makes that choice for both gates (``lce_gate`` here, ``latency.onnx.onnx_gate``) and the
``vlrface latency`` command. ``latency.backend`` picks one (``auto``: the best of them). When the
picked LCE source cannot run (no qemu, a binary that is not aarch64, a sysroot without a library,
an op the binary cannot resolve, a crash under emulation), the gate uses the cost model only if
``latency.fallback`` is true, and says so in one line and in the report's ``fallback``; otherwise
the step fails with that line. The ONNX gate has no cost model to fall back to:
``latency.when_unavailable`` decides it.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from vlrface.errors import VlrfaceError

Log = Callable[[str], None]


class LatencySourceError(VlrfaceError):
    """The configured latency source could not run and the configuration forbids falling back."""


def stderr_log(message: str) -> None:
    print(f"[latency] {message}", file=sys.stderr, flush=True)


def pick(
    backend: str,
    fmt: str = "lce",
    benchmark_binary: str | Path | None = None,
    host_device: str | None = None,
    any_host: bool = False,
    fall_back_now: bool = False,
    emulate: bool = False,
) -> tuple[str, str]:
    """``(source, why)``: the latency source to try first for a model of ``fmt`` (``lce``: an
    LCE flatbuffer, ``onnx``). ``backend`` other than ``auto`` is taken as asked. ``auto``:
    measured on an arm64 host (that is ``host_device``, or with ``any_host`` stands for every
    device: ``vlrface latency``) when it can run the format (ONNX: onnxruntime; LCE: with the
    benchmark binary); else emulated for a flatbuffer with a benchmark binary, or for an ONNX
    model when ``emulate`` asks for it (never otherwise: it sets up ~210 MB on first use); else
    estimated for a flatbuffer, ``unavailable`` for an ONNX model (the cost model prices LCE
    flatbuffers only). A configured binary or emulation without qemu-user is a failure of the
    emulated source (the gate falls back, or fails, and says so), unless ``fall_back_now`` (LCE):
    then it is the cost model at once, ``why`` saying so."""
    from vlrface.latency.emulate import QEMU
    from vlrface.latency.measure import on_arm

    if backend != "auto":
        return backend, f"latency.backend: {backend}"
    if on_arm() and (host_device or any_host) and (fmt == "onnx" or benchmark_binary):
        here = f" ({host_device})" if host_device else ""
        return "measured", f"arm64 host{here}" + (
            f" with {benchmark_binary}" if fmt == "lce" else ""
        )
    if fmt == "onnx":
        if emulate:
            return "emulated", f"latency.emulate: onnxruntime aarch64 under {QEMU}"
        return "unavailable", (
            "not an arm64 host naming its device, and latency.emulate is off "
            "(the ARM cost model prices LCE flatbuffers, not ONNX)"
        )
    if benchmark_binary:
        if shutil.which(QEMU):
            return "emulated", f"{benchmark_binary} under {QEMU}"
        if fall_back_now:
            return "estimated", f"{QEMU} not found: estimated by the cost model instead"
        # a configured binary that cannot run is a failure of the emulated source, not a choice
        return "emulated", f"{benchmark_binary} configured"
    return "estimated", "no latency.benchmark_binary configured"


def choose(cfg) -> tuple[str, str]:
    """``(source, why)`` for a ``LatencyConfig``: the source the gate will try first."""
    return pick(cfg.backend, "lce", cfg.benchmark_binary, cfg.host_device)


def model_latency(
    path: str | Path,
    devices: list[str],
    source: str,
    benchmark_binary: str | Path | None = None,
    sysroot: str | Path | None = None,
    runs: int = 50,
) -> dict:
    """Single-thread ARM latency of an exported model (``.tflite`` or ``.onnx``) on each of
    ``devices`` from ``source`` (``pick``'s): ``latency.source``, ``latency.<device>.ms`` and
    ``.instructions``, ``instructions`` per inference, and the per-device ``details``; the
    emulated sources return their own reports (``emulate``, ``emulate_lce``)."""
    from vlrface.latency import estimate, measure

    onnx = Path(path).suffix == ".onnx"
    if source == "emulated":
        if onnx:
            from vlrface.latency import emulate

            result = emulate.emulate(path, list(devices))
            for device in devices:
                result[f"latency.{device}.instructions"] = result["instructions"]
            return result
        from vlrface.latency.emulate_lce import emulate_lce

        return emulate_lce(path, list(devices), benchmark_binary, sysroot)
    if source == "measured":
        if onnx:
            result = measure.measure_onnx(path, runs)
        else:
            result = measure.measure_lce(path, benchmark_binary, runs)
        # one host is one device: every named device gets this host's figure
        figures = {d: {**result, "source": "measured", "instructions": None} for d in devices}
    else:
        from vlrface.export.lce import census
        from vlrface.latency.costmodel import predict_instructions

        if onnx:
            raise VlrfaceError(f"{path}: the ARM cost model prices LCE flatbuffers, not ONNX")
        flatbuffer = Path(path).read_bytes()
        if flatbuffer[4:8] != b"TFL3":
            raise VlrfaceError(f"{path}: not a TFLite flatbuffer")
        feats = census(flatbuffer)["cost_features"]
        insns = predict_instructions(feats)
        figures = {
            d: {
                "ms": estimate.estimate_ms(feats, d),
                "instructions": insns,
                "source": "estimated",
                "method": estimate.METHOD,
            }
            for d in devices
        }
    payload = {"model": str(path), "latency.source": source}
    for device, fig in figures.items():
        payload[f"latency.{device}.ms"] = fig["ms"]
        payload[f"latency.{device}.instructions"] = fig["instructions"]
    payload["instructions"] = next(iter(figures.values()))["instructions"]
    payload["details"] = figures
    return payload


def environment(cfg) -> dict:
    """What decides the gate's figure besides the flatbuffer: the source ``choose`` picks and the
    sha256 of the configured binary (None when absent). The pipeline passes it to the latency step,
    so a replaced binary, or qemu installed after a cost-model run, is not served from the cache."""
    from vlrface.provenance import sha256_file

    binary = Path(cfg.benchmark_binary) if cfg.benchmark_binary else None
    sha = sha256_file(binary) if binary is not None and binary.is_file() else None
    return {"source": choose(cfg)[0], "binary_sha256": sha}


def lce_gate(tflite: str | Path, census: dict, cfg, log: Log = stderr_log) -> dict:
    """The latency gate of an LCE flatbuffer (``estimate.gate``'s report) from the best source
    ``cfg`` allows, with ``chosen``, ``why`` and ``fallback`` (None, or the one-line reason)."""
    from vlrface.latency.estimate import gate

    source, why = choose(cfg)
    measured, emulated, fallback = None, None, None
    try:
        if source == "measured":
            from vlrface.latency.measure import measure_lce

            measured = {cfg.host_device: measure_lce(tflite, cfg.benchmark_binary)}
        elif source == "emulated":
            from vlrface.latency.emulate_lce import count_instructions

            emulated = count_instructions(tflite, cfg.benchmark_binary, cfg.sysroot, log=log)
    except VlrfaceError as exc:
        line = f"{source} latency failed: {exc}"
        if not cfg.fallback:
            raise LatencySourceError(f"{line} (latency.fallback is false)") from None
        fallback = line
        log(f"{line}; FALLING BACK to the ARM cost model (latency.fallback: true)")
    else:
        if source == "estimated":
            log(f"latency estimated by the ARM cost model: {why}")
        else:
            log(f"latency {source}: {why}")
    report = gate(census, cfg.budget_ms, measured, emulated)
    return {**report, "chosen": source, "why": why, "fallback": fallback}
