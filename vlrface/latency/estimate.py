"""The ARM latency gate, and estimated latency: the cost model's instructions x a device constant.

``latency.source = estimated``: the figure is a prediction, from the converted graph's ops
(``costmodel``) and a per-device milliseconds-per-instruction constant (``devices.yaml``), not a
measurement. ``gate`` compares each budgeted device's figure with its budget; a device measured
on real hardware (``measure``) carries its measured figure and ``source: measured`` instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from vlrface.latency.costmodel import calibration, predict_instructions

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
    census: dict, budgets_ms: dict[str, float], measured: dict[str, dict] | None = None
) -> dict:
    """Every budgeted device's latency against its budget: measured where ``measured`` has the
    device (``measure.measure_lce`` results), estimated otherwise. ``passed`` only if each
    device is within its budget; ``source`` is ``measured`` if any figure is."""
    if not budgets_ms:
        raise ValueError("the latency gate needs a budget for at least one device")
    measured = measured or {}
    feats = census["cost_features"]
    results = {}
    for device, budget in budgets_ms.items():
        if device in measured:
            row = {**measured[device], "source": "measured"}
        else:
            row = {
                "ms": estimate_ms(feats, device),
                "source": "estimated",
                "ms_per_minsn": float(devices()[device]["ms_per_minsn"]),
                "device_source": devices()[device]["source"],
            }
        results[device] = {**row, "budget_ms": float(budget), "passed": row["ms"] <= budget}
    return {
        "source": "measured" if measured else "estimated",
        "method": METHOD,
        "instructions": predict_instructions(feats),
        "calibration_max_abs_error": calibration()["max_abs_error"],
        "devices": results,
        "passed": all(r["passed"] for r in results.values()),
    }
