"""Evaluation steps of both tracks: HR-HR and HR-LR verification on the test split, then the
benchmark protocols of ``evaluation.protocols`` (``vlrface.protocols.suite``), through the same
runners and logged the same way.

Keras: the step runs before the export, so protocols evaluate the fine-tuned Keras model; an
entry with ``model: lce`` converts it here with LCE's converter (float, as ``export_lce`` does
without ``int8``) and runs the flatbuffer with LCE's interpreter on one thread. PyTorch: every
protocol runs on the exported ONNX model's embeddings (onnxruntime), in its own preprocessing.
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
from vlrface.embedders import KerasEmbedder, ONNXEmbedder
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
        embedders = {"keras": KerasEmbedder(model)}
        if any(e.model == "lce" for e in cfg.protocols):
            from vlrface.embedders import LCEEmbedder
            from vlrface.export.lce import convert

            embedders["lce"] = LCEEmbedder(convert(model), num_threads=1)
        metrics.update(_protocols(embedders, cfg, data_cfg.name))
    log_metadata(metadata={"metrics": metrics})
    return metrics


@step(experiment_tracker=TRACKER, cache_policy=cache.ONNX_EVALUATION)
def evaluate_onnx(
    onnx: bytes, manifest: pd.DataFrame, data: dict, evaluation: dict, seed: int
) -> Annotated[dict, "metrics"]:
    """The held-out verification (as ``evaluate_model``) and ``evaluation.protocols`` on the
    exported ONNX model's embeddings."""
    from vlrface.training.torch import SpecEmbedder

    data_cfg, cfg = DataConfig(**data), EvalConfig(**evaluation)
    inner = ONNXEmbedder(onnx, num_threads=0)  # evaluation: every core (latency is elsewhere)
    embedder = SpecEmbedder(inner, inner.preprocessing)
    metrics, _, pairs = evaluate_heldout(embedder, manifest, data_cfg, cfg, seed)
    log_heldout(metrics, pairs, data_cfg, runtime="onnxruntime")
    if cfg.protocols:  # config/torch.py refuses model: lce, so every entry runs this model
        metrics.update(_protocols(embedder, cfg, data_cfg.name, runtime="onnx"))
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


def _protocols(embedders, cfg: EvalConfig, label: str, runtime: str | None = None) -> dict:
    """Run ``cfg.protocols`` with ``embedders`` (one per entry ``model``, or one for all:
    ``runtime`` names it); log their metrics, backends and figures (``eval/<protocol>/``)."""
    from vlrface.protocols.suite import evaluate_suite

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
        mlflow.log_params({f"eval.{e.name}.model": runtime or e.model for e in cfg.protocols})
        mlflow.log_artifacts(str(Path(tmp) / "eval"), "eval")
    return metrics
