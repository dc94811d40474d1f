"""The model zoo, one row per backbone: the only place a backbone is named.

A row gives the framework, the builder (``module:callable``, imported only when the model is
built), the fixed arguments that pick the variant, the input side, the model-config options the
builder takes (``channels``, ``k_bits``: Keras ``ModelConfig`` fields) and, for the PyTorch
models, their preprocessing (``module:constant``, a ``vlrface.models.torch.Preprocessing``).
The configurations' allowed ``model.name`` values, ``build_named`` / ``build_model`` (Keras),
``build_torch`` and the CLI's zoo names all read this table, so a new backbone is its module, a
row here and its test.

Builders are called as ``builder(**args, embedding=..., output_head=...)`` (Keras) or
``builder(**args, embedding=..., num_classes=...)`` (PyTorch). This module imports neither
TensorFlow nor torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from vlrface.errors import ConfigError


@dataclass(frozen=True)
class Backbone:
    framework: str  # "keras" (larq, exported to LCE) or "torch" (exported to ONNX)
    builder: str  # "module:callable"
    input_size: int
    args: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()  # model-config fields the builder takes (Keras)
    preprocessing: str | None = None  # "module:constant" (PyTorch)
    summary: str = ""


_K, _T = "vlrface.models.keras", "vlrface.models.torch"
_SQUEEZE = f"{_T}.squeezefaceposenet:SqueezeFacePoseNet"
_SQUEEZE_PRE = f"{_T}:SQUEEZEFACEPOSENET_PREPROCESSING"

ZOO: dict[str, Backbone] = {
    "binaryfacenet": Backbone(
        "keras", f"{_K}.binaryfacenet:build_for_zoo", 112, options=("channels", "k_bits"),
        summary="BinaryFaceNet, DoReFa k-bit blocks",
    ),
    "binaryfacenet_lce": Backbone(
        "keras", f"{_K}.binaryfacenet_lce:build_binaryfacenet_lce", 112,
        options=("channels", "shortcuts"),
        summary="BinaryFaceNet rebuilt from LCE's optimised ops",
    ),
    "quicknet": Backbone("keras", f"{_K}.quicknet:build_quicknet", 112, {"variant": "quicknet"}),
    "quicknet_small": Backbone(
        "keras", f"{_K}.quicknet:build_quicknet", 112, {"variant": "quicknet_small"}
    ),
    "quicknet_large": Backbone(
        "keras", f"{_K}.quicknet:build_quicknet", 112, {"variant": "quicknet_large"}
    ),
    "binarydensenet28": Backbone(
        "keras", f"{_K}.binarydensenet:build_binarydensenet", 112, {"depth": 28}
    ),
    "binarydensenet37": Backbone(
        "keras", f"{_K}.binarydensenet:build_binarydensenet", 112, {"depth": 37}
    ),
    "binarydensenet45": Backbone(
        "keras", f"{_K}.binarydensenet:build_binarydensenet", 112, {"depth": 45}
    ),
    "se_resnet50": Backbone(
        "torch", f"{_T}.se_resnet50:SEResNet50", 224,
        preprocessing=f"{_T}:SE_RESNET50_PREPROCESSING",
        summary="SE-ResNet-50 (VGGFace2 SENet-50)",
    ),
    "squeezefaceposenet": Backbone(
        "torch", _SQUEEZE, 113, {"dwc": False, "gdc": False}, preprocessing=_SQUEEZE_PRE
    ),
    "squeezefaceposenet_dwc": Backbone(
        "torch", _SQUEEZE, 113, {"dwc": True, "gdc": False}, preprocessing=_SQUEEZE_PRE
    ),
    "squeezefaceposenet_gdc": Backbone(
        "torch", _SQUEEZE, 113, {"dwc": False, "gdc": True}, preprocessing=_SQUEEZE_PRE
    ),
    "squeezefaceposenet_dwc_gdc": Backbone(
        "torch", _SQUEEZE, 113, {"dwc": True, "gdc": True}, preprocessing=_SQUEEZE_PRE
    ),
}  # fmt: skip


def names(framework: str) -> tuple[str, ...]:
    """The zoo's models of ``framework``, in table order."""
    return tuple(name for name, row in ZOO.items() if row.framework == framework)


def entry(name: str, framework: str | None = None) -> Backbone:
    """The row of ``name``; ``ConfigError`` naming the known models when there is none (of
    ``framework``, when given)."""
    row = ZOO.get(name)
    if row is None or (framework is not None and row.framework != framework):
        known = names(framework) if framework else tuple(ZOO)
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(known)}")
    return row


def resolve(ref: str):
    """The object a ``module:name`` reference names (imported now)."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)
