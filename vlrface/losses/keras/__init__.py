"""The Keras loss heads and pair losses (tf ops; importing this package registers every head's
layer for model loading). The heads' names, parameters and classes per framework are the table
``vlrface.losses.heads.LOSS_HEADS``; ``vlrface.losses.torch`` has the same heads in PyTorch.

``arcface_loss`` is the softmax cross-entropy of any head's logits; ``pairs`` holds
``octuplet_loss`` and ``feature_distillation_loss``.
"""

from vlrface.losses.keras.arcface import ArcFaceHead, arcface_loss
from vlrface.losses.keras.margins import (
    AdaFaceHead,
    CosFaceHead,
    LaplacianMarginHead,
    SoftmaxHead,
    SphereFaceHead,
    laplacian_quality,
)
from vlrface.losses.keras.pairs import feature_distillation_loss, octuplet_loss

__all__ = [
    "AdaFaceHead",
    "ArcFaceHead",
    "CosFaceHead",
    "LaplacianMarginHead",
    "SoftmaxHead",
    "SphereFaceHead",
    "arcface_loss",
    "feature_distillation_loss",
    "laplacian_quality",
    "octuplet_loss",
]
