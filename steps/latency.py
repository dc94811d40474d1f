"""ARM latency gates. LCE flatbuffers: measured on an arm64 host, else emulated under qemu-user,
else estimated by the ARM cost model (vlrface.latency.sources picks; the fallback is configured,
never silent). ONNX models: ``vlrface.latency.onnx``."""

from typing import Annotated

import mlflow
from zenml import log_metadata, step

from steps import cache
from vlrface.config.keras import LatencyConfig
from vlrface.config.torch import OnnxLatencyConfig
from vlrface.fileio import temporary_file
from vlrface.latency.sources import lce_gate

TRACKER = True  # the active stack's experiment tracker, whatever its name


@step(experiment_tracker=TRACKER, cache_policy=cache.LATENCY)
def latency_gate(
    tflite: bytes, export_report: dict, latency: dict, environment: dict | None = None
) -> Annotated[dict, "latency_report"]:
    """Compare each device's single-thread latency with its budget, from the best source the
    configuration allows: measured (arm64 host), emulated (LCE's aarch64 binary under qemu) or
    estimated (cost model). ``environment`` (``sources.environment``) only keys the cache."""
    cfg = LatencyConfig(**latency)
    with temporary_file(tflite, "model.tflite") as path:
        report = lce_gate(path, export_report["census"], cfg)
    for device, r in report["devices"].items():
        mlflow.log_metric(f"latency.{device}.ms", r["ms"])
        mlflow.log_metric(f"latency.{device}.budget_ms", r["budget_ms"])
        mlflow.set_tag(f"latency.{device}.source", r["source"])
    if report["instructions"] is not None:
        mlflow.log_metric("latency.instructions", report["instructions"])
    if report["estimated_instructions"] is not None:  # None: an op the cost model cannot price
        mlflow.log_metric("latency.estimated_instructions", report["estimated_instructions"])
    tags = {
        "latency.source": report["source"],
        "gate.latency": "passed" if report["passed"] else "failed",
    }
    if report.get("emulation"):
        tags["latency.binary_sha256"] = report["emulation"]["binary_sha256"]
        tags["latency.qemu_cpu"] = report["emulation"]["qemu_cpu"]
    if report["fallback"]:
        tags["latency.fallback"] = report["fallback"][:5000]
    mlflow.set_tags(tags)
    log_metadata(metadata={"latency": report})
    return report


@step(experiment_tracker=TRACKER, cache_policy=cache.ONNX_LATENCY)
def onnx_latency_gate(onnx: bytes, latency: dict) -> Annotated[dict, "latency_report"]:
    """Latency of the ONNX model against the device budgets (``vlrface.latency.onnx``:
    measured on an arm64 host, else emulated when configured, else unavailable)."""
    from vlrface.latency.onnx import onnx_gate

    report = onnx_gate(onnx, OnnxLatencyConfig(**latency))
    if report["emulation"]:
        mlflow.log_metric("latency.instructions", report["emulation"]["instructions"])
        mlflow.log_metric(
            "latency.arm_x86.max_abs_diff", report["emulation"]["parity"]["max_abs_diff"]
        )
    mlflow.log_metric("export.onnx.host_ms", report["host"]["ms"])
    for device, r in report["devices"].items():
        if r["ms"] is not None:
            mlflow.log_metric(f"latency.{device}.ms", r["ms"])
        mlflow.log_metric(f"latency.{device}.budget_ms", r["budget_ms"])
        mlflow.set_tag(f"latency.{device}.source", r["source"])
    gate = "passed" if report["passed"] else "failed"
    mlflow.set_tags({"latency.source": report["source"], "gate.latency": gate})
    mlflow.log_dict(report, "latency/onnx_latency.json")
    log_metadata(metadata={"latency": report})
    return report
