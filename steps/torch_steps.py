"""ZenML steps of the PyTorch track: train (pre-train / fine-tune, with an optional frozen
teacher), ONNX export with a parity floor, verification on the ONNX embeddings, the ONNX latency
gate, and registration + promotion through ``vlrface.registry`` / ``vlrface.promotion``.

Models travel between steps as ``training_torch.save_model`` bytes (config, preprocessing and
weights in one ``torch.save`` payload), so no pickled ``nn.Module`` is stored.
"""

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import mlflow
import numpy as np
import pandas as pd
from zenml import log_metadata, step

from steps import cache
from steps.evaluation import log_heldout
from steps.registry import (
    gate_tags,
    provenance_tags,
    publish,
    serving_settings,
    synthetic_note,
)
from vlrface import provenance, serving
from vlrface.config.common import DataConfig, EvalConfig
from vlrface.config.torch import (
    OnnxExportConfig,
    OnnxLatencyConfig,
    TorchModelConfig,
    TorchRegistryConfig,
    TorchStageConfig,
)
from vlrface.embedders import ONNXEmbedder
from vlrface.fileio import write_atomic
from vlrface.preprocess import load_face
from vlrface.protocols.verification import evaluate_heldout

TRACKER = True  # the active stack's experiment tracker, whatever its name


def _checkpoint_dir(stage: TorchStageConfig, key: dict) -> Path:
    if stage.checkpoint_dir:
        return Path(stage.checkpoint_dir)
    digest = provenance.config_hash(key)[:16]
    return Path(tempfile.gettempdir()) / "vlrface-torch-checkpoints" / digest


def _train(prefix, manifest, data, model, stage, seed, init: bytes | None, teacher: bytes | None):
    from vlrface import training_torch as tt

    data_cfg, model_cfg = DataConfig(**data), TorchModelConfig(**model)
    stage_cfg = TorchStageConfig(**stage)
    train_rows = manifest[manifest.split == "train"]
    counts = train_rows.identity.map(train_rows.identity.value_counts())
    train_rows = train_rows[counts >= stage_cfg.min_images_per_identity].reset_index(drop=True)
    mlflow.log_metrics(
        {
            f"{prefix}.train_images": len(train_rows),
            f"{prefix}.train_identities": train_rows.identity.nunique(),
        }
    )
    tt.seed_everything(seed)
    net = tt.load_model(init) if init is not None else tt.make_model(model_cfg)
    teacher_net = None
    if stage_cfg.teacher is not None:
        if stage_cfg.teacher.checkpoint:
            path = stage_cfg.teacher.checkpoint
            teacher_net = tt.load_model(path)
            mlflow.set_tags(
                {f"{prefix}.teacher.path": path, f"{prefix}.teacher.sha256": _sha(path)}
            )
        elif teacher is not None:
            teacher_net = tt.load_model(teacher)
            mlflow.set_tag(f"{prefix}.teacher.sha256", hashlib.sha256(teacher).hexdigest())
        else:
            raise ValueError(
                f"{prefix}.teacher: no teacher checkpoint and no pre-trained model to use as one"
            )
    mlflow.log_params({f"{prefix}.{k}": v for k, v in stage.items() if k != "progress"})
    if stage_cfg.degrade is not None:
        total = stage_cfg.epochs * (len(train_rows) // stage_cfg.batch_size)
        total = min(total, stage_cfg.max_steps or total)
        policy = tt.build_policy(stage_cfg.degrade, max(total, 1))
        mlflow.log_dict(policy.policy_dict(), f"training/{prefix}_degrade_policy.json")
    key = {
        "prefix": prefix,
        "stage": stage,
        "seed": seed,
        "data": tt.data_hash(train_rows),
        "init": hashlib.sha256(init).hexdigest() if init is not None else None,
        "teacher": (
            _sha(stage_cfg.teacher.checkpoint)
            if stage_cfg.teacher is not None and stage_cfg.teacher.checkpoint
            else hashlib.sha256(teacher).hexdigest()
            if teacher_net is not None
            else None
        ),
    }
    ckpt = _checkpoint_dir(stage_cfg, key)

    def on_epoch(epoch: int, record: dict) -> None:
        from vlrface import runs  # a store outage is waited out (bounded), then skipped

        runs.log_metrics_resilient(
            {f"{prefix}.{k}": v for k, v in record.items() if k != "epoch"}, step=epoch
        )

    t0 = time.perf_counter()
    result = tt.train(
        net,
        train_rows,
        data_cfg.root,
        stage_cfg,
        seed,
        image_size=data_cfg.image_size,
        teacher=teacher_net,
        checkpoint_dir=ckpt,
        on_epoch=on_epoch,
        desc=prefix,
    )
    seconds = time.perf_counter() - t0
    images = (result.steps - (result.resumed_from or 0)) * stage_cfg.batch_size
    mlflow.log_metrics(
        {f"{prefix}.steps": result.steps, f"{prefix}.images_per_s": images / max(seconds, 1e-9)}
    )
    if result.resumed_from is not None:
        mlflow.set_tag(f"{prefix}.resumed_from_step", str(result.resumed_from))
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: the crash-recovery state is spent
    log_metadata(metadata={prefix: {"history": result.history, "steps": result.steps}})
    return tt.save_model(result.model, model_cfg), result.history


@step(experiment_tracker=TRACKER, cache_policy=cache.TORCH_TRAINING)
def pretrain_torch(
    manifest: pd.DataFrame, data: dict, model: dict, stage: dict, seed: int
) -> tuple[Annotated[bytes, "pretrained_torch"], Annotated[list, "pretrain_history"]]:
    """Train the backbone from scratch with the configured head on the training split."""
    mlflow.log_params({f"model.{k}": v for k, v in model.items()})
    backbone, history = _train("pretrain", manifest, data, model, stage, seed, None, None)
    return backbone, history


@step(experiment_tracker=TRACKER, cache_policy=cache.TORCH_TRAINING)
def finetune_torch(
    pretrained: bytes, manifest: pd.DataFrame, data: dict, model: dict, stage: dict, seed: int
) -> tuple[Annotated[bytes, "finetuned_torch"], Annotated[list, "finetune_history"]]:
    """Fine-tune from ``pretrained`` (new head for this data's classes). With a ``teacher``
    section the frozen teacher is ``teacher.checkpoint``, else ``pretrained`` itself (T-C)."""
    stage_cfg = TorchStageConfig(**stage)
    teacher = pretrained if stage_cfg.teacher is not None else None
    mlflow.set_tag("training.variant", _variant(stage_cfg))
    backbone, history = _train(
        "finetune", manifest, data, model, stage, seed + 1, pretrained, teacher
    )
    return backbone, history


def _variant(stage: TorchStageConfig) -> str:
    """The cross-resolution paper's names: T(eacher) / C(urriculum), n = without."""
    curriculum = bool(stage.degrade) and stage.degrade.get("kind") == "curriculum"
    return f"{'T' if stage.teacher else 'nT'}-{'C' if curriculum else 'nC'}"


@step(experiment_tracker=TRACKER, cache_policy=cache.TORCH_TRAINING)
def load_torch_pretrained(
    model: dict, checkpoint_sha256: str
) -> Annotated[bytes, "pretrained_torch"]:
    """Start from ``model.pretrained`` (a ``training_torch.save_model`` file) instead of
    pre-training; ``checkpoint_sha256`` keys the cache."""
    from vlrface import training_torch as tt
    from vlrface.errors import ConfigError

    cfg = TorchModelConfig(**model)
    net = tt.load_model(cfg.pretrained)
    if net.preprocessing.input_size != tt.make_model(cfg).preprocessing.input_size:
        raise ConfigError(
            f"model.pretrained {cfg.pretrained}: input size {net.preprocessing.input_size} "
            "differs from model.input_size"
        )
    mlflow.set_tags({"pretrained.path": cfg.pretrained, "pretrained.sha256": checkpoint_sha256})
    return tt.save_model(net, cfg)


def _faces(manifest: pd.DataFrame, data_cfg: DataConfig, split: str, n: int) -> np.ndarray:
    rows = manifest[manifest.split == split].head(n)
    return np.stack([load_face(data_cfg.root, p, data_cfg.image_size) for p in rows.path])


@step(experiment_tracker=TRACKER, cache_policy=cache.EXPORT)
def export_onnx(
    model: bytes, manifest: pd.DataFrame, data: dict, export: dict
) -> tuple[Annotated[bytes, "onnx"], Annotated[dict, "export_report"]]:
    """ONNX (opset 17, dynamic batch, TorchScript exporter); fail below the parity floor on
    real held-out test faces in the model's preprocessing."""
    from vlrface import training_torch as tt
    from vlrface.export import onnx as onnx_export

    data_cfg, cfg = DataConfig(**data), OnnxExportConfig(**export)
    net = tt.load_model(model)
    spec = net.preprocessing
    inputs = spec.normalize(spec.geometry(_faces(manifest, data_cfg, "test", cfg.parity_samples)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            report = onnx_export.export(
                net, out, spec.input_size, cfg.parity_min_cosine, inputs=inputs
            )
        except onnx_export.OnnxParityError:
            mlflow.set_tag("gate.parity", "failed")
            raise
        data_bytes = out.read_bytes()
    census, par = report["census"], report["parity"]
    mlflow.log_metrics(
        {
            "export.onnx.parity.cosine_min": par["cosine_min"],
            "export.onnx.parity.max_abs_diff": par["max_abs_diff"],
            "export.onnx.params": census["params"],
            "export.onnx.nodes": census["nodes"],
            "export.onnx.size_bytes": census["size_bytes"],
        }
    )
    report.pop("path", None)
    mlflow.log_dict(report, "export/onnx_report.json")
    mlflow.set_tag("gate.parity", "passed")
    log_metadata(metadata={"export": {"ops": census["ops"], **par}})
    return data_bytes, report


@step(experiment_tracker=TRACKER, cache_policy=cache.EVALUATION)
def evaluate_onnx(
    onnx: bytes, manifest: pd.DataFrame, data: dict, evaluation: dict, seed: int
) -> Annotated[dict, "metrics"]:
    """The demo verification protocol (as ``evaluate_model``) on the exported ONNX model's
    embeddings: 10-fold accuracy and TAR@FAR, HR gallery vs probes at each resolution."""
    from vlrface.training.torch import SpecEmbedder

    data_cfg, cfg = DataConfig(**data), EvalConfig(**evaluation)
    inner = ONNXEmbedder(onnx, num_threads=0)  # evaluation: every core (latency is elsewhere)
    embedder = SpecEmbedder(inner, inner.preprocessing)
    metrics, _, pairs = evaluate_heldout(embedder, manifest, data_cfg, cfg, seed)
    log_heldout(metrics, pairs, data_cfg, runtime="onnxruntime")
    log_metadata(metadata={"metrics": metrics})
    return metrics


def _emulate(onnx: bytes, devices: list[str]) -> dict:
    """``vlrface.latency.emulate`` on the exported model's bytes."""
    from vlrface.latency.emulate import emulate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx)
        return emulate(path, devices)


def onnx_latency_ms(onnx: bytes, runs: int, threads: int = 1) -> float:
    """Median single-image latency (ms) of onnxruntime on this host, after two warm-up runs."""
    embedder = ONNXEmbedder(onnx, num_threads=threads)
    size = embedder.preprocessing.input_size
    x = np.zeros((1, size, size, 3), np.float32)
    for _ in range(2):
        embedder(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        embedder(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


@step(experiment_tracker=TRACKER, cache_policy=cache.LATENCY)
def onnx_latency_gate(onnx: bytes, latency: dict) -> Annotated[dict, "latency_report"]:
    """Latency of the ONNX model against the device budgets.

    The ARM cost model estimates LCE flatbuffers and does not apply to ONNX. A device figure is
    measured only when this host is arm64 and ``latency.host_device`` names it; otherwise every
    budgeted device is ``unavailable`` and ``latency.when_unavailable`` decides the gate. This
    host's own single-thread onnxruntime time is logged for information only
    (``export.onnx.host_ms``), never compared with a device budget.
    """
    import platform

    from vlrface.latency.measure import on_arm

    cfg = OnnxLatencyConfig(**latency)
    host_ms = onnx_latency_ms(onnx, cfg.runs)
    devices, measured = {}, False
    for device, budget in cfg.budget_ms.items():
        if on_arm() and cfg.host_device == device:
            ms = host_ms
            devices[device] = {
                "ms": ms,
                "budget_ms": budget,
                "source": "measured",
                "passed": ms <= budget,
            }
            measured = True
        else:
            devices[device] = {"ms": None, "budget_ms": budget, "source": "unavailable"}
    emulation = None
    if not measured and cfg.emulate:
        emulation = _emulate(onnx, list(cfg.budget_ms))
        for device, budget in cfg.budget_ms.items():
            ms = emulation[f"latency.{device}.ms"]
            devices[device] = {
                "ms": ms,
                "budget_ms": budget,
                "source": "emulated",
                "passed": ms <= budget,
            }
        mlflow.log_metric("latency.instructions", emulation["instructions"])
        mlflow.log_metric("latency.arm_x86.max_abs_diff", emulation["parity"]["max_abs_diff"])
    if measured or emulation:
        passed = all(r["passed"] for r in devices.values() if "passed" in r)
        source = "measured" if measured else "emulated"
    else:
        passed = cfg.when_unavailable == "defer"
        source = "unavailable"
    report = {
        "format": "onnx",
        "source": source,
        "passed": passed,
        "when_unavailable": cfg.when_unavailable,
        "devices": devices,
        "host": {"machine": platform.machine(), "ms": host_ms, "threads": 1, "runs": cfg.runs},
        "emulation": emulation,
    }
    mlflow.log_metric("export.onnx.host_ms", host_ms)
    for device, r in devices.items():
        if r["ms"] is not None:
            mlflow.log_metric(f"latency.{device}.ms", r["ms"])
        mlflow.log_metric(f"latency.{device}.budget_ms", r["budget_ms"])
        mlflow.set_tag(f"latency.{device}.source", r["source"])
    mlflow.set_tags({"latency.source": source, "gate.latency": "passed" if passed else "failed"})
    mlflow.log_dict(report, "latency/onnx_latency.json")
    log_metadata(metadata={"latency": report})
    return report


@step(experiment_tracker=TRACKER, cache_policy=cache.REGISTRY)
def register_torch(
    model: bytes,
    onnx: bytes,
    metrics: dict,
    export_report: dict,
    latency_report: dict,
    data_info: dict,
    config: dict,
) -> Annotated[dict, "promotion"]:
    """Register a version (torch checkpoint + ONNX, sha256 of each) with its provenance tags
    and model card; move ``champion`` if the promotion policy passes."""
    cfg = TorchRegistryConfig(**config["registry"])
    census, parity = export_report["census"], export_report["parity"]
    efficiency = {
        "export.onnx.parity.cosine_min": parity["cosine_min"],
        "export.onnx.parity.max_abs_diff": parity["max_abs_diff"],
        "export.onnx.params": census["params"],
        "export.onnx.nodes": census["nodes"],
        "export.onnx.size_bytes": census["size_bytes"],
        "export.onnx.host_ms": latency_report["host"]["ms"],
    }
    tags = {
        **provenance_tags(data_info, config),
        "framework": "pytorch",
        "model.format": "onnx",
        **gate_tags(export_report, latency_report, {**metrics, **efficiency}),
    }
    served, verification = serving_settings(metrics, data_info, config)
    tags.update(verification)
    description = (
        f"{config['model']['name']} (PyTorch, ONNX) trained{synthetic_note(data_info)} "
        f"(data md5 {data_info['dvc_md5']})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # an MLflow pyfunc serving the ONNX model with its own preprocessing; the torch
        # checkpoint beside it
        path = Path(tmp) / f"{cfg.model_name}.onnx"
        write_atomic(path, onnx)
        folder = serving.save(Path(tmp) / "model", path, **served)
        # the checkpoint without pickle: weights as .npz, config and preprocessing as JSON
        from vlrface import training_torch as tt

        weights, meta = tt.to_portable(model)
        write_atomic(folder / "backbone.npz", weights)
        write_atomic(folder / "backbone.json", meta)
        return publish(cfg, folder, tags, config, description)


def _sha(path: str) -> str:
    return provenance.sha256_file(path)
