"""Training steps of both tracks: pre-train (or start from a checkpoint), then fine-tune with a
degradation policy (VLR augmentation), optionally with a frozen teacher. Keras models travel as
Keras artifacts; PyTorch models as ``vlrface.training.torch.save_model`` bytes (config,
preprocessing and weights in one ``torch.save`` payload, so no pickled ``nn.Module`` is
stored)."""

from typing import Annotated

import mlflow
import numpy as np
import pandas as pd
from zenml import log_metadata, step

from steps import cache
from vlrface import runs
from vlrface._keras import tf
from vlrface.array_materializer import ArrayMaterializer
from vlrface.config.common import DataConfig
from vlrface.config.keras import ModelConfig, StageConfig
from vlrface.config.torch import TorchModelConfig, TorchStageConfig
from vlrface.keras_materializer import KerasModelMaterializer
from vlrface.preprocess import normalize, split_faces
from vlrface.references import pretrained_file
from vlrface.training.keras import run_stage

TRACKER = True  # the active stack's experiment tracker, whatever its name


def _logger(prefix: str, first_epoch: int = 1):
    """Per-epoch figures as ``<prefix>.<name>`` metrics, MLflow step = the epoch (the Keras
    trainer counts epochs from 0, the PyTorch one from 1)."""

    def on_epoch(epoch: int, record: dict) -> None:
        # a store outage mid-training is waited out (bounded), then skipped: training goes on
        runs.log_metrics_resilient(
            {f"{prefix}.{k}": v for k, v in record.items() if k != "epoch"},
            step=epoch + first_epoch,
        )

    return on_epoch


def _flat(prefix: str, value) -> dict:
    """``{"a": {"b": 1}}`` -> ``{"<prefix>.a.b": 1}`` (lists as they are), for MLflow params."""
    if isinstance(value, dict):
        return {
            k: v for key, sub in value.items() for k, v in _flat(f"{prefix}.{key}", sub).items()
        }
    return {prefix: value}


def _log_start(prefix: str):
    def on_start(info: dict) -> None:
        # what the run does, as built: the degradation policy's policy_dict() (library included),
        # loss, schedule, optimizer, strategy and whether mixed precision applies here
        mlflow.log_dict(info, f"training/{prefix}_run.json")
        if info["policy"] is not None:
            mlflow.log_dict(info["policy"], f"training/{prefix}_vlr_policy.json")
        mlflow.log_params(_flat(f"{prefix}.run", info))

    return on_start


def _stage(prefix, manifest, data, model, stage, seed, backbone=None, centres=None):
    data_cfg, stage_cfg = DataConfig(**data), StageConfig(**stage)
    mlflow.log_params(_flat(prefix, stage))
    backbone, centres, history = run_stage(
        manifest,
        data_cfg.root,
        ModelConfig(**model),
        stage_cfg,
        seed,
        backbone,
        centres,
        desc=prefix,
        on_epoch=_logger(prefix),
        on_start=_log_start(prefix),
    )  # a non-finite loss raises NonFiniteLossError: the step (and the run) fails
    log_metadata(metadata={prefix: {"final": history[-1], "epochs": len(history)}})
    return backbone, centres, history


@step(
    experiment_tracker=TRACKER,
    cache_policy=cache.TRAINING,
    output_materializers={"pretrained": KerasModelMaterializer},
)
def pretrain_model(
    manifest: pd.DataFrame, data: dict, model: dict, stage: dict, seed: int
) -> tuple[
    Annotated[tf.keras.Model, "pretrained"],
    Annotated[np.ndarray, "pretrain_centres"],
    Annotated[list, "pretrain_history"],
]:
    """Pre-train the backbone with an ArcFace head on the training split."""
    mlflow.log_params({f"model.{k}": v for k, v in model.items()})
    backbone, centres, history = _stage("pretrain", manifest, data, model, stage, seed)
    return backbone, centres, history


@step(
    experiment_tracker=TRACKER,
    cache_policy=cache.TRAINING,
    output_materializers={"finetuned": KerasModelMaterializer},
)
def finetune_model(
    pretrained: tf.keras.Model,
    centres: np.ndarray,
    manifest: pd.DataFrame,
    data: dict,
    model: dict,
    stage: dict,
    seed: int,
) -> tuple[
    Annotated[tf.keras.Model, "finetuned"],
    Annotated[np.ndarray, "finetune_centres"],
    Annotated[list, "finetune_history"],
]:
    """Fine-tune with the stage's degradation policy (``vlr:`` shorthand: random inter-area
    down/up-sampling), optionally with a frozen teacher (T-C)."""
    backbone, centres, history = _stage(
        "finetune", manifest, data, model, stage, seed + 1, pretrained, centres
    )
    return backbone, centres, history


@step(
    experiment_tracker=TRACKER,
    cache_policy=cache.TRAINING,
    # the centres are empty (a new head): ZenML's own array metadata fails on an empty array
    output_materializers={
        "pretrained": KerasModelMaterializer,
        "pretrain_centres": ArrayMaterializer,
    },
)
def load_pretrained(
    manifest: pd.DataFrame, data: dict, model: dict, checkpoint_sha256: str
) -> tuple[Annotated[tf.keras.Model, "pretrained"], Annotated[np.ndarray, "pretrain_centres"]]:
    """Start from ``model.pretrained`` instead of pre-training (``checkpoint_sha256`` keys the
    cache). An ``.h5`` is imported layer by layer and verified on the data's test faces."""
    from vlrface.keras_materializer import load_keras
    from vlrface.models.keras.checkpoint import import_checkpoint

    data_cfg, model_cfg = DataConfig(**data), ModelConfig(**model)
    path = str(pretrained_file(model_cfg.pretrained))  # a registered version: fetched, verified
    if path.endswith(".h5"):
        faces = normalize(split_faces(manifest, data_cfg.root, data_cfg.image_size, "test", 8))
        backbone, report = import_checkpoint(path, faces, model_cfg=model_cfg)
        log_metadata(metadata={"pretrained": report.as_dict()})
        mlflow.log_metric("pretrained.import_max_abs_diff", report.max_abs_diff)
    else:
        backbone = load_keras(path)
    mlflow.set_tags(
        {"pretrained.path": model_cfg.pretrained, "pretrained.sha256": checkpoint_sha256}
    )
    centres = np.zeros((0, 0), np.float32)  # a new ArcFace head for the fine-tune classes
    return backbone, centres


def _torch_stage(prefix, manifest, data, model, stage, seed, init=None, teacher=None):
    from vlrface.training import torch as tt

    data_cfg, stage_cfg = DataConfig(**data), TorchStageConfig(**stage)
    mlflow.log_params({f"{prefix}.{k}": v for k, v in stage.items() if k != "progress"})
    run = tt.run_stage(
        prefix,
        manifest,
        data_cfg.root,
        data_cfg.image_size,
        TorchModelConfig(**model),
        stage_cfg,
        seed,
        init=init,
        teacher=teacher if stage_cfg.teacher is not None else None,
        on_epoch=_logger(prefix, first_epoch=0),
    )  # a non-finite loss raises NonFiniteError: the step (and the run) fails
    mlflow.log_metrics(run.metrics)
    if run.tags:
        mlflow.set_tags(run.tags)
    if run.policy is not None:
        mlflow.log_dict(run.policy, f"training/{prefix}_degrade_policy.json")
    log_metadata(metadata={prefix: {"history": run.history, "steps": run.steps}})
    return run.model, run.history


@step(experiment_tracker=TRACKER, cache_policy=cache.TORCH_TRAINING)
def pretrain_torch(
    manifest: pd.DataFrame, data: dict, model: dict, stage: dict, seed: int
) -> tuple[Annotated[bytes, "pretrained_torch"], Annotated[list, "pretrain_history"]]:
    """Train the PyTorch backbone from scratch with the configured head on the training split."""
    mlflow.log_params({f"model.{k}": v for k, v in model.items()})
    backbone, history = _torch_stage("pretrain", manifest, data, model, stage, seed)
    return backbone, history  # a literal tuple: ZenML reads it as two outputs


@step(experiment_tracker=TRACKER, cache_policy=cache.TORCH_TRAINING)
def finetune_torch(
    pretrained: bytes, manifest: pd.DataFrame, data: dict, model: dict, stage: dict, seed: int
) -> tuple[Annotated[bytes, "finetuned_torch"], Annotated[list, "finetune_history"]]:
    """Fine-tune from ``pretrained`` (new head for this data's classes). With a ``teacher``
    section the frozen teacher is ``teacher.checkpoint``, else ``pretrained`` itself (T-C)."""
    from vlrface.training.torch import variant

    mlflow.set_tag("training.variant", variant(TorchStageConfig(**stage)))
    backbone, history = _torch_stage(
        "finetune", manifest, data, model, stage, seed + 1, pretrained, pretrained
    )
    return backbone, history  # a literal tuple: ZenML reads it as two outputs


@step(experiment_tracker=TRACKER, cache_policy=cache.TORCH_TRAINING)
def load_torch_pretrained(
    model: dict, checkpoint_sha256: str
) -> Annotated[bytes, "pretrained_torch"]:
    """Start from ``model.pretrained`` (a ``save_model`` file) instead of pre-training;
    ``checkpoint_sha256`` keys the cache."""
    from vlrface.training import torch as tt

    cfg = TorchModelConfig(**model)
    pretrained = tt.load_pretrained(cfg)
    mlflow.set_tags({"pretrained.path": cfg.pretrained, "pretrained.sha256": checkpoint_sha256})
    return pretrained
