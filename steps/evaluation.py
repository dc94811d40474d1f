"""Evaluation step: HR-HR and HR-LR verification on the test split, then the benchmark
protocols of ``evaluation.protocols`` (``vlrface.protocols.suite``).

The step runs before the export, so protocols evaluate the fine-tuned Keras model; an entry with
``model: lce`` converts it here with LCE's converter (float, as ``export_lce`` does without
``int8``) and runs the flatbuffer with LCE's interpreter on one thread, through the same runners.
"""

import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import log_metadata, step

from steps import cache
from vlrface._keras import tf
from vlrface.config.common import DataConfig, EvalConfig
from vlrface.embedders import KerasEmbedder
from vlrface.protocols.verification import evaluate_heldout
from vlrface.reports.plots import roc_figure

TRACKER = True  # the active stack's experiment tracker, whatever its name


@step(experiment_tracker=TRACKER, cache_policy=cache.EVALUATION)
def evaluate_model(
    model: tf.keras.Model, manifest: pd.DataFrame, data: dict, evaluation: dict, seed: int
) -> Annotated[dict, "metrics"]:
    """10-fold accuracy and TAR@FAR, HR gallery vs probes at each configured resolution."""
    data_cfg, cfg = DataConfig(**data), EvalConfig(**evaluation)
    metrics, scores, pairs = evaluate_heldout(KerasEmbedder(model), manifest, data_cfg, cfg, seed)
    label = " (synthetic data)" if data_cfg.synthetic else ""
    fig = roc_figure(
        scores, pairs.same.to_numpy(bool), f"{data_cfg.name}: HR gallery vs LR probe{label}"
    )
    mlflow.log_figure(fig, f"evaluation/roc_{data_cfg.name}.png")
    log_heldout(metrics, pairs, data_cfg)
    if cfg.protocols:
        metrics.update(_protocols(model, cfg, data_cfg.name))
    log_metadata(metadata={"metrics": metrics})
    return metrics


def log_heldout(metrics: dict, pairs: pd.DataFrame, data_cfg: DataConfig, **extra) -> None:
    """The held-out verification's metrics, and a JSON summary, to the active MLflow run."""
    mlflow.log_metrics(metrics)
    mlflow.log_dict(
        {
            "pairs": len(pairs),
            "positives": int(pairs.same.sum()),
            "synthetic": data_cfg.synthetic,
            **extra,
            "metrics": metrics,
        },
        f"evaluation/metrics_{data_cfg.name}.json",
    )


def _protocols(model, cfg: EvalConfig, label: str) -> dict:
    """Run ``cfg.protocols``; log their metrics, backends and figures (``eval/<protocol>/``)."""
    from vlrface.protocols.suite import evaluate_suite

    embedders = {"keras": KerasEmbedder(model)}
    if any(e.model == "lce" for e in cfg.protocols):
        from vlrface.embedders import LCEEmbedder
        from vlrface.export.lce import convert

        embedders["lce"] = LCEEmbedder(convert(model), num_threads=1)
    with tempfile.TemporaryDirectory(prefix="vlrface-eval-") as tmp:
        metrics, _ = evaluate_suite(
            embedders,
            cfg.protocols,
            tmp,
            model_label=f"{label} model",
            flip=cfg.flip,
            down=cfg.down,
            up=cfg.up,
        )
        mlflow.log_metrics(metrics)
        mlflow.log_params({f"eval.{e.name}.model": e.model for e in cfg.protocols})
        mlflow.log_artifacts(str(Path(tmp) / "eval"), "eval")
    return metrics
