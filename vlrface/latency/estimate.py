"""The ARM latency gate, and estimated latency: the cost model's instructions x a device constant.

``latency.source = estimated``: the figure is a prediction, from the converted graph's ops
(``costmodel``) and a per-device milliseconds-per-instruction constant (``devices.yaml``), not a
measurement. ``gate`` compares each budgeted device's figure with its budget; a device measured
on real hardware (``measure``) carries its measured figure and ``source: measured``, and a graph
counted on LCE's aarch64 kernels under qemu (``emulate_lce``) carries ``source: emulated``
(its instructions x the same constants). ``sources`` decides which of them the gate gets.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from vlrface.latency.costmodel import UnknownOpError, calibration, predict_instructions

METHOD = "per-op ARM cost model (calibration.yaml) x device ms per M-instruction (devices.yaml)"


@lru_cache
def devices() -> dict[str, dict]:
    return yaml.safe_load((Path(__file__).with_name("devices.yaml")).read_text())


def estimate_ms(cost_features: dict, device: str) -> float:
    """Estimated single-thread latency in ms on ``device`` of a graph with these features."""
    table = devices()
    if device not in table:
        raise ValueError(f"unknown device {device!r}; known: {sorted(table)}")
    return predict_instructions(cost_features) / 1e6 * float(table[device]["ms_per_minsn"])


def gate(
    census: dict,
    budgets_ms: dict[str, float],
    measured: dict[str, dict] | None = None,
    emulated: dict | None = None,
) -> dict:
    """Every budgeted device's latency against its budget: measured where ``measured`` has the
    device (``measure.measure_lce`` results), else emulated when ``emulated`` is given
    (``emulate_lce.count_instructions``: instructions x the device constant), else estimated.
    ``passed`` only if each device is within its budget; ``source`` is the best of the figures'
    sources (measured > emulated > estimated). ``instructions`` is per inference: emulated if
    counted, else the cost model's; ``estimated_instructions`` is always the cost model's."""
    from vlrface.latency.emulate import to_ms

    if not budgets_ms:
        raise ValueError("the latency gate needs a budget for at least one device")
    measured = measured or {}
    feats = census["cost_features"]
    try:
        predicted = predict_instructions(feats)
    except UnknownOpError:
        if not (measured or emulated):
            raise
        predicted = None  # a real figure needs no price: the cost model's is only for reference
    counted = emulated["instructions"] if emulated else None
    results = {}
    for device, budget in budgets_ms.items():
        constant = {
            "ms_per_minsn": float(devices()[device]["ms_per_minsn"]),
            "device_source": devices()[device]["source"],
        }
        if device in measured:
            row = {**measured[device], "source": "measured", "instructions": None}
        elif emulated:
            row = {"ms": to_ms(counted, device), "source": "emulated", "instructions": counted}
            row.update(constant)
        else:
            row = {"ms": estimate_ms(feats, device), "source": "estimated"}
            row.update(constant, instructions=predicted)
        results[device] = {**row, "budget_ms": float(budget), "passed": row["ms"] <= budget}
    source = "measured" if measured else "emulated" if emulated else "estimated"
    report = {
        "source": source,
        "method": emulated["method"] if emulated and not measured else METHOD,
        "instructions": counted if counted is not None else predicted,
        "estimated_instructions": predicted,
        "calibration_max_abs_error": calibration()["max_abs_error"],
        "devices": results,
        "passed": all(r["passed"] for r in results.values()),
    }
    if emulated:
        report["emulation"] = {k: v for k, v in emulated.items() if k != "method"}
    return report
