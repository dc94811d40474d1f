"""Export step: LCE flatbuffer, op census, and Keras-vs-LCE parity as a gate."""

from typing import Annotated

import mlflow
import numpy as np
import pandas as pd
from zenml import log_metadata, step

from vlrface._keras import tf
from vlrface.config import DataConfig, ExportConfig
from vlrface.export import lce
from vlrface.preprocess import load_rgb, normalize

TRACKER = "mlflow_tracker"


class ParityError(RuntimeError):
    """The exported model disagrees with the Keras model beyond the configured floor."""


@step(experiment_tracker=TRACKER)
def export_lce(
    model: tf.keras.Model, manifest: pd.DataFrame, data: dict, export: dict
) -> tuple[Annotated[bytes, "tflite"], Annotated[dict, "export_report"]]:
    """Convert with Larq Compute Engine; fail if parity on real test faces is below the floor."""
    data_cfg, cfg = DataConfig(**data), ExportConfig(**export)
    flatbuffer = lce.convert(model)
    census = lce.census(flatbuffer)
    test = manifest[manifest.split == "test"].head(cfg.parity_samples)
    x = normalize(
        np.stack([load_rgb(f"{data_cfg.root}/{p}", data_cfg.image_size) for p in test.path])
    )
    par = lce.parity(model, flatbuffer, x)
    report = {
        "census": census,
        "parity": par,
        "parity_min_cosine": cfg.parity_min_cosine,
        "parity_passed": par["cosine_min"] >= cfg.parity_min_cosine,
    }
    mlflow.log_metrics(
        {
            "export.lce.parity.cosine_min": par["cosine_min"],
            "export.lce.parity.max_abs_diff": par["max_abs_diff"],
            "export.lce.binary_mac_share": census["binary_mac_share"],
            "export.lce.binary_macs": census["binary_macs"],
            "export.lce.float_macs": census["float_macs"],
            "export.lce.size_bytes": census["size_bytes"],
        }
    )
    mlflow.log_dict(report, "export/lce_report.json")
    mlflow.set_tag("gate.parity", "passed" if report["parity_passed"] else "failed")
    log_metadata(metadata={"export": {"ops": census["ops"], **par}})
    if not report["parity_passed"]:
        raise ParityError(
            f"LCE parity cosine {par['cosine_min']:.4f} < floor {cfg.parity_min_cosine} "
            f"(max abs diff {par['max_abs_diff']:.4g})"
        )
    return flatbuffer, report
