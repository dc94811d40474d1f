"""Evaluation step: HR-HR and HR-LR verification on the test split."""

from typing import Annotated

import mlflow
import numpy as np
import pandas as pd
from zenml import log_metadata, step

from vlrface._keras import tf
from vlrface.config import DataConfig, EvalConfig
from vlrface.embedders import KerasEmbedder
from vlrface.preprocess import load_face
from vlrface.protocols.verification import evaluate_pairs, make_pairs
from vlrface.reports.plots import roc_figure

TRACKER = "mlflow_tracker"


@step(experiment_tracker=TRACKER)
def evaluate_model(
    model: tf.keras.Model, manifest: pd.DataFrame, data: dict, evaluation: dict, seed: int
) -> Annotated[dict, "metrics"]:
    """10-fold accuracy and TAR@FAR, HR gallery vs probes at each configured resolution."""
    data_cfg, cfg = DataConfig(**data), EvalConfig(**evaluation)
    test = manifest[manifest.split == "test"].reset_index(drop=True)
    pairs = make_pairs(test, cfg.pairs, seed)
    used = np.unique(np.concatenate([pairs.a, pairs.b]))
    images = np.zeros((len(test), data_cfg.image_size, data_cfg.image_size, 3), np.uint8)
    for i in used:
        images[i] = load_face(data_cfg.root, test.path[i], data_cfg.image_size)
    metrics, scores = evaluate_pairs(
        KerasEmbedder(model),
        images,
        pairs,
        data_cfg.name,
        cfg.resolutions,
        cfg.far,
        cfg.folds,
        cfg.flip,
        cfg.down,
        cfg.up,
    )
    mlflow.log_metrics(metrics)
    label = " (synthetic data)" if data_cfg.synthetic else ""
    fig = roc_figure(
        scores, pairs.same.to_numpy(bool), f"{data_cfg.name}: HR gallery vs LR probe{label}"
    )
    mlflow.log_figure(fig, f"evaluation/roc_{data_cfg.name}.png")
    mlflow.log_dict(
        {
            "pairs": len(pairs),
            "positives": int(pairs.same.sum()),
            "synthetic": data_cfg.synthetic,
            "metrics": metrics,
        },
        f"evaluation/metrics_{data_cfg.name}.json",
    )
    log_metadata(metadata={"metrics": metrics})
    return metrics
