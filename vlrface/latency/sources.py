"""The LCE latency gate with the best source available, and its fallback.

Sources, best first (``latency.<device>.source``):

* ``measured``: LCE's benchmark binary on this host, when it is arm64 and the configuration
  names the binary and which budgeted device this host is (``measure.measure_lce``);
* ``emulated``: that aarch64 binary under ``qemu-aarch64`` with the instruction-counting plugin,
  when ``latency.benchmark_binary`` is set and qemu-user is on PATH (``emulate_lce``);
* ``estimated``: the per-op ARM cost model (``costmodel``, ``estimate``).

``latency.backend`` picks one (``auto``: the best of them). When the picked source cannot run
(no qemu, a binary that is not aarch64, a sysroot without a library, an op the binary cannot
resolve, a crash under emulation), the gate uses the cost model only if ``latency.fallback`` is
true, and says so in one line and in the report's ``fallback``; otherwise the step fails with
that line.
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


def _log(message: str) -> None:
    print(f"[latency] {message}", file=sys.stderr, flush=True)


def choose(cfg) -> tuple[str, str]:
    """``(source, why)`` for a ``LatencyConfig``: the source the gate will try first."""
    from vlrface.latency.emulate import QEMU
    from vlrface.latency.measure import on_arm

    if cfg.backend != "auto":
        return cfg.backend, f"latency.backend: {cfg.backend}"
    if cfg.benchmark_binary and cfg.host_device and on_arm():
        return "measured", f"arm64 host ({cfg.host_device}) with {cfg.benchmark_binary}"
    if cfg.benchmark_binary:
        if shutil.which(QEMU):
            return "emulated", f"{cfg.benchmark_binary} under {QEMU}"
        # a configured binary that cannot run is a failure of the emulated source, not a choice
        return "emulated", f"{cfg.benchmark_binary} configured"
    return "estimated", "no latency.benchmark_binary configured"


def lce_gate(tflite: str | Path, census: dict, cfg, log: Log = _log) -> dict:
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
