"""The loss heads, one row each: the only place a loss is named.

A row gives the head's class in each framework (``module:Class``; the same class name, math and
parameters in both) and the parameters a configuration's ``head:`` section may set, with their
types. The configuration's allowed ``head.kind`` values, both training loops' head construction
and the Keras custom objects used to load saved models all read this table, so a new loss is a
row here, a Keras class, a torch class and its test.

The heads share one interface: ``head(embeddings, labels)`` returns the training logits, and
``head(embeddings, labels, quality)`` where the class sets ``needs_quality`` (the per-image
Laplacian quality, from the head's ``statistic``). Margin heads have ``cosine(embeddings)``, the
plain cosine logits without any margin: the training accuracy is measured on them (on the
margin logits the true class is handicapped by the margin and the accuracy reads near 0).

This module imports neither TensorFlow nor torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

#: what the configuration's parameter types are called in its error messages
TYPE_NAMES = {float: "a number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class LossHead:
    keras: str  # "module:Class"
    torch: str
    params: dict[str, type] = field(default_factory=dict)
    summary: str = ""


_K, _T = "vlrface.losses.keras.margins", "vlrface.losses.torch.margins"

LOSS_HEADS: dict[str, LossHead] = {
    "softmax": LossHead(
        f"{_K}:SoftmaxHead",
        f"{_T}:SoftmaxHead",
        {"bn_dropout": bool},
        "plain softmax classifier (bn_dropout: BN + dropout 0.5 before the FC)",
    ),
    "arcface": LossHead(
        "vlrface.losses.keras.arcface:ArcFaceHead",
        f"{_T}:ArcFaceHead",
        {"scale": float, "margin": float},
        "additive angular margin, s cos(theta + m)",
    ),
    "cosface": LossHead(
        f"{_K}:CosFaceHead",
        f"{_T}:CosFaceHead",
        {"scale": float, "margin": float},
        "additive cosine margin, s (cos(theta) - m)",
    ),
    "sphereface": LossHead(
        f"{_K}:SphereFaceHead",
        f"{_T}:SphereFaceHead",
        {"scale": float, "margin": float},
        "multiplicative angular margin, s psi(m theta)",
    ),
    "adaface": LossHead(
        f"{_K}:AdaFaceHead",
        f"{_T}:AdaFaceHead",
        {"scale": float, "margin": float, "h": float, "t_alpha": float},
        "feature-norm adaptive margin",
    ),
    "laplacian": LossHead(
        f"{_K}:LaplacianMarginHead",
        f"{_T}:LaplacianMarginHead",
        {
            "scale": float,
            "quality_scale": float,
            "min_margin": float,
            "max_margin": float,
            "statistic": str,
        },
        "ArcFace with a per-image margin from Laplacian image quality",
    ),
}
LOSSES = tuple(LOSS_HEADS)


def head_class(kind: str, framework: str) -> type:
    """The class of loss head ``kind`` for ``framework`` (``keras`` or ``torch``)."""
    if kind not in LOSS_HEADS:
        raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSSES)}")
    module, name = getattr(LOSS_HEADS[kind], framework).split(":")
    return getattr(importlib.import_module(module), name)


def check_params(kind: str, params: dict) -> dict:
    """``params`` for loss head ``kind``, numbers as floats; ``ValueError`` naming an unknown
    kind, a parameter that does not apply, or one of the wrong type."""
    if kind not in LOSS_HEADS:
        raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSSES)}")
    allowed = LOSS_HEADS[kind].params
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no parameters"
        raise ValueError(f"{unknown} do not apply to loss {kind!r}; it takes {takes}")
    out = {}
    for key, value in params.items():
        want = allowed[key]
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise ValueError(f"{key} must be {TYPE_NAMES[want]}, got {value!r}")
        out[key] = value
    if "statistic" in out:
        from vlrface.losses.quality import check_statistic

        check_statistic(out["statistic"])
    return out
