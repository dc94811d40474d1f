"""ARM latency gate: measured on an arm64 host, else estimated by the ARM cost model."""

import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
from zenml import log_metadata, step

from steps import cache
from vlrface.config import LatencyConfig
from vlrface.latency.estimate import gate
from vlrface.latency.measure import measure_lce

TRACKER = True  # the active stack's experiment tracker, whatever its name


@step(experiment_tracker=TRACKER, cache_policy=cache.LATENCY)
def latency_gate(
    tflite: bytes, export_report: dict, latency: dict
) -> Annotated[dict, "latency_report"]:
    """Compare each device's single-thread latency with its budget: measured on this host when
    it is an arm64 device with LCE's benchmark binary, estimated by the cost model otherwise."""
    cfg = LatencyConfig(**latency)
    measured = {}
    if cfg.measures_here():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model.tflite")
            path.write_bytes(tflite)
            measured[cfg.host_device] = measure_lce(path, cfg.benchmark_binary)
    report = gate(export_report["census"], cfg.budget_ms, measured)
    for device, r in report["devices"].items():
        mlflow.log_metric(f"latency.{device}.ms", r["ms"])
        mlflow.log_metric(f"latency.{device}.budget_ms", r["budget_ms"])
        mlflow.set_tag(f"latency.{device}.source", r["source"])
    mlflow.set_tags(
        {
            "latency.source": report["source"],
            "gate.latency": "passed" if report["passed"] else "failed",
        }
    )
    log_metadata(metadata={"latency": report})
    return report
