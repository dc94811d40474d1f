"""First-order ARM latency estimate of an LCE flatbuffer from its MACs (notes/lce_arm.md §7).

``ms(pixel-1) = 10.8 * GbMAC + 239 * GfMAC``, fitted on LCE's published single-thread Pixel 1
latencies of six larq-zoo models (+-7 %), scaled to other devices by a factor from
``devices.yaml``. MACs are those of the converted flatbuffer (``export.lce.census``): binary MACs
in ``LceBconv2d``, float MACs in convolutions and dense layers.

Known limit: element-wise work is not counted. That is fine for the zoo models the formula was
fitted on, but it underestimates a model whose cost lies in element-wise ops, such as the
published BinaryFaceNet, whose DoReFa fake-quantisation LCE keeps as float TANH/ROUND/... ops.
Every figure it gives is labelled ``latency.source = estimated``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

MS_PER_GBMAC_BINARY = 10.8
MS_PER_GBMAC_FLOAT = 239.0
METHOD = "mac-formula-pixel1 (10.8 ms/GbMAC + 239 ms/GfMAC) x device factor"


@lru_cache
def devices() -> dict[str, dict]:
    return yaml.safe_load((Path(__file__).with_name("devices.yaml")).read_text())


def estimate_ms(binary_macs: int, float_macs: int, device: str) -> float:
    """Estimated single-thread latency in ms of a model with these MACs on ``device``."""
    table = devices()
    if device not in table:
        raise ValueError(f"unknown device {device!r}; known: {sorted(table)}")
    pixel1 = MS_PER_GBMAC_BINARY * binary_macs / 1e9 + MS_PER_GBMAC_FLOAT * float_macs / 1e9
    return pixel1 * float(table[device]["factor"])


def gate(census: dict, budgets_ms: dict[str, float]) -> dict:
    """Estimate every budgeted device; ``passed`` only if each is within its budget."""
    if not budgets_ms:
        raise ValueError("the latency gate needs a budget for at least one device")
    results = {}
    for device, budget in budgets_ms.items():
        ms = estimate_ms(census["binary_macs"], census["float_macs"], device)
        results[device] = {
            "ms": ms,
            "budget_ms": float(budget),
            "passed": ms <= budget,
            "factor_source": devices()[device]["source"],
        }
    return {
        "source": "estimated",
        "method": METHOD,
        "devices": results,
        "passed": all(r["passed"] for r in results.values()),
    }
