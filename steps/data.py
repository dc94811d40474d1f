"""Data steps: read the DVC-versioned dataset into a manifest, validate it with GX."""

import json
import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import log_metadata, step

from steps import cache
from vlrface.config import DataConfig
from vlrface.data.records import identity_split
from vlrface.data.training_set import training_rows
from vlrface.data.validation import (
    DataValidationError,
    validate_dataset,
    validate_manifest,
)

TRACKER = True  # the active stack's experiment tracker, whatever its name


@step(experiment_tracker=TRACKER, cache_policy=cache.DATA)
def load_data(
    data: dict, data_version: dict, seed: int
) -> tuple[Annotated[pd.DataFrame, "manifest"], Annotated[dict, "data_info"]]:
    """Read the configured data root in its release layout; keep the release's training rows and
    hold out a stable share of identities for in-run verification; record the data version."""
    cfg = DataConfig(**data)
    release = training_rows(cfg)
    manifest = release.reset_index(drop=True)
    manifest.attrs = release.attrs
    manifest["release_split"] = manifest["split"]
    manifest["split"] = [identity_split(i, seed, cfg.test_fraction) for i in manifest.identity]
    train, test = manifest[manifest.split == "train"], manifest[manifest.split == "test"]
    info = {
        **{f"dvc_{k}": v for k, v in data_version.items()},
        "dataset": cfg.name,
        "layout": "+".join(cfg.layouts()),
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
            # "dvc", or "content-md5" for an untracked root (vlrface.data.versioning)
            "data.version_source": data_version.get("tracked_by", "dvc"),
            "data.synthetic": str(cfg.synthetic).lower(),
            "data.dataset": cfg.name,
        }
    )
    mlflow.log_params({f"data.{k}": v for k, v in info.items() if k != "dvc_md5"})
    mlflow.log_metric("data.skipped_records", info["skipped_records"])
    mlflow.log_dict(release.attrs["provenance"], "data_validation/manifest_provenance.json")
    log_metadata(metadata={"data": info})
    return manifest, info


def _as_released(manifest: pd.DataFrame, cfg: DataConfig):
    """``(layout, rows)`` per release, as its reader gave them (release split, own paths and
    ids), for the release's own GX suite."""
    rows = manifest.assign(split=manifest.release_split).drop(columns="release_split")
    if not cfg.datasets:
        yield cfg.layout, rows
        return
    for entry in cfg.datasets:
        part = rows[rows.source == entry.layout]
        prefix = Path(entry.root).as_posix().strip("/") + "/"
        yield (
            entry.layout,
            part.assign(path=part.path.str.removeprefix(prefix), identity=part.raw_identity).drop(
                columns="raw_identity"
            ),
        )


@step(experiment_tracker=TRACKER, cache_policy=cache.DATA)
def validate_data(manifest: pd.DataFrame, data: dict) -> Annotated[dict, "validation_report"]:
    """Run the dataset's GX suites (layout, schema, official counts, resolution, landmarks) and
    the training-manifest suite; a failure stops the pipeline before training. GX's data docs
    go to MLflow either way."""
    cfg = DataConfig(**data)
    with tempfile.TemporaryDirectory() as docs:
        try:
            dataset_report = {"warnings": []}
            for layout, rows in _as_released(manifest, cfg):
                one = validate_dataset(rows, layout, docs_dir=f"{docs}/dataset/{layout}")
                dataset_report[layout] = one
                dataset_report["warnings"] += one["warnings"]
            report = validate_manifest(
                manifest,
                f"{cfg.name}_{'+'.join(cfg.layouts())}",
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
