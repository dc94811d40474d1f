"""Export steps: the Keras model to an LCE flatbuffer, the PyTorch one to ONNX; each with its
op census and a parity floor on real held-out faces as a gate."""

from typing import Annotated

import mlflow
import numpy as np
import pandas as pd
from zenml import log_metadata, step

from steps import cache
from vlrface._keras import tf
from vlrface.config.common import DataConfig
from vlrface.config.keras import ExportConfig
from vlrface.config.torch import OnnxExportConfig
from vlrface.export import lce
from vlrface.export.metrics import LCE, ONNX
from vlrface.preprocess import normalize, split_faces

TRACKER = True  # the active stack's experiment tracker, whatever its name


@step(experiment_tracker=TRACKER, cache_policy=cache.EXPORT)
def export_lce(
    model: tf.keras.Model, manifest: pd.DataFrame, data: dict, export: dict
) -> tuple[Annotated[bytes, "tflite"], Annotated[dict, "export_report"]]:
    """Convert with Larq Compute Engine; fail if parity on real test faces is below the floor."""
    data_cfg, cfg = DataConfig(**data), ExportConfig(**export)

    def faces(split: str, n: int) -> np.ndarray:
        return normalize(split_faces(manifest, data_cfg.root, data_cfg.image_size, split, n))

    x = faces("test", cfg.parity_samples)
    # int8 ranges come from training images; parity is checked on held-out test faces
    representative = faces("train", cfg.int8_calibration_samples) if cfg.int8 else None
    try:
        flatbuffer, report = lce.export(model, x, cfg.parity_min_cosine, representative)
    except lce.ParityError:
        mlflow.set_tag("gate.parity", "failed")
        raise
    census, par = report["census"], report["parity"]
    mlflow.log_metrics(LCE.metrics(report))
    mlflow.log_dict(report, "export/lce_report.json")
    mlflow.set_tag("gate.parity", "passed")
    log_metadata(metadata={"export": {"ops": census["ops"], **par}})
    return flatbuffer, report


@step(experiment_tracker=TRACKER, cache_policy=cache.ONNX_EXPORT)
def export_onnx(
    model: bytes, manifest: pd.DataFrame, data: dict, export: dict
) -> tuple[Annotated[bytes, "onnx"], Annotated[dict, "export_report"]]:
    """ONNX (opset 17, dynamic batch, TorchScript exporter); fail below the parity floor on
    real held-out test faces in the model's preprocessing."""
    from vlrface.export import onnx

    data_cfg, cfg = DataConfig(**data), OnnxExportConfig(**export)
    faces = split_faces(manifest, data_cfg.root, data_cfg.image_size, "test", cfg.parity_samples)
    try:
        data_bytes, report = onnx.export_checkpoint(model, faces, cfg.parity_min_cosine)
    except onnx.OnnxParityError:
        mlflow.set_tag("gate.parity", "failed")
        raise
    mlflow.log_metrics(ONNX.metrics(report))
    mlflow.log_dict(report, "export/onnx_report.json")
    mlflow.set_tag("gate.parity", "passed")
    log_metadata(metadata={"export": {"ops": report["census"]["ops"], **report["parity"]}})
    return data_bytes, report
