"""Data steps: read the DVC-versioned dataset into a manifest, validate it with GX."""

import json
import tempfile
from typing import Annotated

import mlflow
import pandas as pd
from zenml import log_metadata, step

from vlrface.config import DataConfig
from vlrface.data.manifest import build_manifest
from vlrface.data.records import identity_split
from vlrface.data.validation import (
    DataValidationError,
    split_by_role,
    validate_dataset,
    validate_manifest,
)

TRACKER = "mlflow_tracker"


@step(experiment_tracker=TRACKER)
def load_data(
    data: dict, data_version: dict, seed: int
) -> tuple[Annotated[pd.DataFrame, "manifest"], Annotated[dict, "data_info"]]:
    """Read the configured data root in its release layout; keep the release's training rows and
    hold out a stable share of identities for in-run verification; record the data version."""
    cfg = DataConfig(**data)
    release = build_manifest(cfg.layout, cfg.root, on_error=cfg.on_error)
    manifest = split_by_role(cfg.layout, release)[0].reset_index(drop=True)
    manifest.attrs = release.attrs
    manifest["release_split"] = manifest["split"]
    manifest["split"] = [identity_split(i, seed, cfg.test_fraction) for i in manifest.identity]
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
        "skipped_records": int(release.attrs.get("skipped", 0)),
    }
    mlflow.set_tags(
        {
            "data.dvc_md5": data_version["md5"],
            "data.synthetic": str(cfg.synthetic).lower(),
            "data.dataset": cfg.name,
        }
    )
    mlflow.log_params({f"data.{k}": v for k, v in info.items() if k != "dvc_md5"})
    mlflow.log_metric("data.skipped_records", info["skipped_records"])
    mlflow.log_dict(release.attrs["provenance"], "data_validation/manifest_provenance.json")
    log_metadata(metadata={"data": info})
    return manifest, info


@step(experiment_tracker=TRACKER)
def validate_data(manifest: pd.DataFrame, data: dict) -> Annotated[dict, "validation_report"]:
    """Run the dataset's GX suites (layout, schema, official counts, resolution, landmarks) and
    the training-manifest suite; a failure stops the pipeline before training. GX's data docs
    go to MLflow either way."""
    cfg = DataConfig(**data)
    with tempfile.TemporaryDirectory() as docs:
        try:
            as_released = manifest.assign(split=manifest.release_split).drop(
                columns="release_split"
            )
            dataset_report = validate_dataset(as_released, cfg.layout, docs_dir=f"{docs}/dataset")
            report = validate_manifest(
                manifest,
                f"{cfg.name}_{cfg.layout}",
                cfg.image_size,
                cfg.min_images_per_identity,
                docs_dir=f"{docs}/training",
            )
        except DataValidationError as exc:
            mlflow.log_dict(exc.result, "data_validation/gx_result.json")
            mlflow.log_artifacts(docs, "data_validation/data_docs")
            mlflow.set_tag("gate.data", "failed")
            raise
        mlflow.log_artifacts(docs, "data_validation/data_docs")
    mlflow.set_tag("data.warnings", str(len(dataset_report["warnings"])))
    mlflow.log_dict(report, "data_validation/gx_result.json")
    mlflow.log_dict(dataset_report, "data_validation/dataset_report.json")
    mlflow.set_tag("gate.data", "passed")
    stats = report["statistics"]
    mlflow.log_metric("data.gx.success_percent", float(stats["success_percent"]))
    log_metadata(metadata={"gx": json.loads(json.dumps(stats))})
    return report
