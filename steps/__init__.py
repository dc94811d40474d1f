"""ZenML steps: thin wiring around the ``vlrface`` library."""

from steps.data import load_data, validate_data
from steps.evaluation import evaluate_model
from steps.export import export_lce
from steps.latency import latency_gate
from steps.registry import register_model
from steps.training import finetune_model, load_pretrained, pretrain_model

__all__ = [
    "evaluate_model",
    "export_lce",
    "finetune_model",
    "latency_gate",
    "load_data",
    "load_pretrained",
    "pretrain_model",
    "register_model",
    "validate_data",
]
