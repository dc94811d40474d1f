"""ZenML steps: thin wiring around the ``vlrface`` library, one module per stage, each serving
both tracks (Keras/LCE and PyTorch/ONNX)."""

from steps.data import align_data, load_data, validate_data
from steps.evaluation import evaluate_model, evaluate_onnx
from steps.export import export_lce, export_onnx
from steps.latency import latency_gate, onnx_latency_gate
from steps.registry import register_model, register_stage, register_torch
from steps.training import (
    finetune_model,
    finetune_torch,
    load_pretrained,
    load_torch_pretrained,
    pretrain_model,
    pretrain_torch,
)

__all__ = [
    "align_data",
    "evaluate_model",
    "evaluate_onnx",
    "export_lce",
    "export_onnx",
    "finetune_model",
    "finetune_torch",
    "latency_gate",
    "load_data",
    "load_pretrained",
    "load_torch_pretrained",
    "onnx_latency_gate",
    "pretrain_model",
    "pretrain_torch",
    "register_model",
    "register_stage",
    "register_torch",
    "validate_data",
]
