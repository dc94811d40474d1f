"""Margin losses for face recognition (one interface per framework).

Keras (tf ops, imported here so the layers are registered for model loading):
``ArcFaceHead``, ``CosFaceHead``, ``SphereFaceHead``, ``AdaFaceHead``, ``LaplacianMarginHead``
with ``arcface_loss`` (softmax cross-entropy of any head's logits), and ``keras_pairs``'s
``octuplet_loss`` and ``feature_distillation_loss``.

PyTorch (same names, parameters and math): ``vlrface.losses.torch.margins`` and
``vlrface.losses.torch.pairs`` (imported on demand, so Keras users do not load torch).
Framework-free: ``vlrface.losses.quality`` (Laplacian image quality, numpy).
"""

from vlrface.losses.keras.arcface import ArcFaceHead, arcface_loss
from vlrface.losses.keras.margins import (
    AdaFaceHead,
    CosFaceHead,
    LaplacianMarginHead,
    SphereFaceHead,
    laplacian_quality,
)
from vlrface.losses.keras.pairs import feature_distillation_loss, octuplet_loss

__all__ = [
    "AdaFaceHead",
    "ArcFaceHead",
    "CosFaceHead",
    "LaplacianMarginHead",
    "SphereFaceHead",
    "arcface_loss",
    "feature_distillation_loss",
    "laplacian_quality",
    "octuplet_loss",
]
