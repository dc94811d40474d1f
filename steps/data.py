"""Data steps: read the DVC-versioned dataset into a manifest, validate it with GX."""

import json
from typing import Annotated

import mlflow
import pandas as pd
from zenml import log_metadata, step

from vlrface.config import DataConfig
from vlrface.data import casia
from vlrface.data.validation import DataValidationError, validate_manifest

TRACKER = "mlflow_tracker"


@step(experiment_tracker=TRACKER)
def load_data(
    data: dict, data_version: dict, seed: int
) -> tuple[Annotated[pd.DataFrame, "manifest"], Annotated[dict, "data_info"]]:
    """Build the manifest of the configured data root; record the data version on the run."""
    cfg = DataConfig(**data)
    manifest = casia.read_manifest(cfg.root, cfg.test_fraction, seed)
    train, test = manifest[manifest.split == "train"], manifest[manifest.split == "test"]
    info = {
        **{f"dvc_{k}": v for k, v in data_version.items()},
        "dataset": cfg.name,
        "layout": cfg.layout,
        "synthetic": cfg.synthetic,
        "images": len(manifest),
        "identities": int(manifest.identity.nunique()),
        "train_images": len(train),
        "train_identities": int(train.identity.nunique()),
        "test_images": len(test),
        "test_identities": int(test.identity.nunique()),
    }
    mlflow.set_tags(
        {
            "data.dvc_md5": data_version["md5"],
            "data.synthetic": str(cfg.synthetic).lower(),
            "data.dataset": cfg.name,
        }
    )
    mlflow.log_params({f"data.{k}": v for k, v in info.items() if k != "dvc_md5"})
    log_metadata(metadata={"data": info})
    return manifest, info


@step(experiment_tracker=TRACKER)
def validate_data(manifest: pd.DataFrame, data: dict) -> Annotated[dict, "validation_report"]:
    """Run the face-manifest GX suite; a failure stops the pipeline before training."""
    cfg = DataConfig(**data)
    try:
        report = validate_manifest(
            manifest, f"{cfg.name}_{cfg.layout}", cfg.image_size, cfg.min_images_per_identity
        )
    except DataValidationError as exc:
        mlflow.log_dict(exc.result, "data_validation/gx_result.json")
        mlflow.set_tag("gate.data", "failed")
        raise
    mlflow.log_dict(report, "data_validation/gx_result.json")
    mlflow.set_tag("gate.data", "passed")
    stats = report["statistics"]
    mlflow.log_metric("data.gx.success_percent", float(stats["success_percent"]))
    log_metadata(metadata={"gx": json.loads(json.dumps(stats))})
    return report
