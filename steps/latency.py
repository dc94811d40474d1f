"""ARM latency gate: estimated from the converted model's MACs (``latency.source=estimated``)."""

from typing import Annotated

import mlflow
from zenml import log_metadata, step

from vlrface.config import LatencyConfig
from vlrface.latency.estimate import gate

TRACKER = "mlflow_tracker"


@step(experiment_tracker=TRACKER)
def latency_gate(export_report: dict, latency: dict) -> Annotated[dict, "latency_report"]:
    """Compare each device's estimated single-thread latency with its budget."""
    report = gate(export_report["census"], LatencyConfig(**latency).budget_ms)
    for device, r in report["devices"].items():
        mlflow.log_metric(f"latency.{device}.ms", r["ms"])
        mlflow.log_metric(f"latency.{device}.budget_ms", r["budget_ms"])
    mlflow.set_tags(
        {
            "latency.source": report["source"],
            "gate.latency": "passed" if report["passed"] else "failed",
        }
    )
    log_metadata(metadata={"latency": report})
    return report
