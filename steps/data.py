"""Data steps: read the DVC-versioned dataset into a manifest, validate it with GX."""

import json
import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import log_metadata, step

from steps import cache
from vlrface.config.common import DataConfig
from vlrface.data import alignment
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


@step(experiment_tracker=TRACKER, cache_policy=cache.DATA)
def align_data(
    manifest: pd.DataFrame, data: dict, data_version: dict
) -> tuple[Annotated[pd.DataFrame, "aligned_manifest"], Annotated[dict, "aligned_data"]]:
    """Training reads aligned faces only: a raw release (``vlrface.data.alignment.plan``) is
    aligned into a copy keyed on its data version (``data.align_dir``), with the release's own
    landmarks or the face detector (``data.align``); an aligned one passes through. Returns the
    manifest and the ``data`` section every later step reads images with (``root`` the aligned
    copy). Logs how many faces each source gave and lists the photos without a face."""
    cfg = DataConfig(**data)
    sources = manifest["source"].astype(str) if "source" in manifest else None
    groups = (
        [(cfg.layout, manifest)] if sources is None else list(manifest.groupby(sources, sort=True))
    )
    plans = {str(src): alignment.plan(rows, str(src), cfg.align, cfg.image_size, cfg.root)
             for src, rows in groups}  # fmt: skip
    mlflow.set_tag("data.align", cfg.align)
    if set(plans.values()) == {"none"}:
        applied = "none (aligned release)" if cfg.align != "none" else "none"
        mlflow.set_tag("data.align.applied", applied)
        log_metadata(metadata={"alignment": {"applied": "none", "plans": plans}})
        return manifest, data
    if "none" in plans.values():
        raise alignment.DataError(
            f"{cfg.root}: data.datasets mixes aligned and raw releases ({plans}); align the raw "
            "one first (vlrface data align) and point data.datasets at the aligned copy"
        )
    out = alignment.cache_dir(
        Path(cfg.align_dir).resolve(),
        f"{cfg.name}-{'+'.join(cfg.layouts())}",
        data_version["md5"],
        cfg.align,
        alignment.template_size(cfg.image_size),
    )
    aligned, report = alignment.align_manifest(
        manifest, cfg.root, out, mode=cfg.align, layout=cfg.layout,
        image_size=alignment.template_size(cfg.image_size), workers=cfg.align_workers,
    )  # fmt: skip
    print(f"alignment ({cfg.align}) of {cfg.root}: {alignment.summary(report)}")
    if report["no_face"]:
        print(f"no face found in {len(report['no_face'])} photo(s), left out (listed in "
              f"{out / alignment.NO_FACE}), e.g. {report['no_face'][0]}")  # fmt: skip
    mlflow.set_tag("data.align.applied", "aligned")
    for src, counts in report["per_source"].items():
        for key in ("images", "landmarks", "detector", "no_face"):
            mlflow.log_metric(f"data.align.{src}.{key}", counts[key])
    mlflow.log_metric("data.align.images_per_second", report["images_per_second"])
    mlflow.log_dict(report, "data_alignment/alignment.json")
    log_metadata(metadata={"alignment": {k: v for k, v in report.items() if k != "no_face"}})
    return aligned, {**data, "root": str(out)}


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
