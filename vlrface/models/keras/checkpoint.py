"""Importing the BinaryFaceNet authors' Keras checkpoint into our definition.

The published ``.h5`` is a whole Keras 2.8 model (backbone + insightface "E" head). We build our
``binaryfacenet`` with the same head and copy the weights layer by layer, in graph order, checking
every shape; then both models embed the same real faces and must agree to ``tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlrface.errors import DataError


class CheckpointError(DataError):
    """A checkpoint that does not fit the definition; names the first mismatching layer."""


@dataclass
class ImportReport:
    source: str
    sha256: str
    layers_copied: int
    faces: int
    max_abs_diff: float
    tolerance: float

    def as_dict(self) -> dict:
        return dict(vars(self))


def load_h5(path: str | Path):
    import larq  # noqa: F401  (registers larq's layers for deserialisation)

    from vlrface._keras import custom_objects, tf

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return tf.keras.models.load_model(
            path, custom_objects=custom_objects(), compile=False, safe_mode=True
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a loadable Keras model ({exc})") from exc


def copy_weights(src, dst, source: str = "checkpoint") -> int:
    """Copy ``src``'s weights into ``dst`` layer by layer; returns the number of layers."""
    from vlrface._keras import tf

    nested = [layer.name for layer in src.layers if isinstance(layer, tf.keras.Model)]
    if len(nested) > 1:  # an output_ensemble: several networks side by side
        raise CheckpointError(
            f"{source}: an ensemble of {len(nested)} networks ({', '.join(nested)}), not one "
            "backbone to start from; start from one of its networks"
        )
    a = [layer for layer in src.layers if layer.weights]
    b = [layer for layer in dst.layers if layer.weights]
    for i, (la, lb) in enumerate(zip(a, b, strict=False)):  # lengths compared below
        sa = [tuple(w.shape) for w in la.weights]
        sb = [tuple(w.shape) for w in lb.weights]
        if sa != sb:
            raise CheckpointError(
                f"{source}: layer {i} '{la.name}' does not fit '{lb.name}': "
                f"checkpoint shapes {sa} vs model shapes {sb}"
            )
    if len(a) != len(b):
        extra = a[len(b)] if len(a) > len(b) else b[len(a)]
        raise CheckpointError(
            f"{source}: {len(a)} weighted layers in the checkpoint vs {len(b)} in the model "
            f"(first unmatched: '{extra.name}')"
        )
    for la, lb in zip(a, b, strict=True):
        lb.set_weights(la.get_weights())
    return len(a)


def import_checkpoint(
    path: str | Path, faces: np.ndarray, tolerance: float = 1e-4, model_cfg=None
) -> tuple[object, ImportReport]:
    """Build ``binaryfacenet`` with the "E" head, load ``path``'s weights, verify on ``faces``.

    ``faces`` are normalised float32 ``(N, 112, 112, 3)`` crops. Raises ``CheckpointError`` on a
    shape mismatch or when the embeddings differ by more than ``tolerance``.
    """
    from vlrface.embedders import KerasEmbedder
    from vlrface.models.keras.binaryfacenet import BinaryFaceNetConfig, build_binaryfacenet
    from vlrface.provenance import sha256_file

    ref = load_h5(path)
    cfg = BinaryFaceNetConfig()
    if model_cfg is not None:
        cfg = BinaryFaceNetConfig(
            channels=model_cfg.channels or 64,
            embedding=model_cfg.embedding,
            k_bits=dict(model_cfg.k_bits),
        )
    ours = build_binaryfacenet(cfg, output_head=True)
    n = copy_weights(ref, ours, str(path))
    diff = float(np.abs(KerasEmbedder(ref)(faces) - KerasEmbedder(ours)(faces)).max())
    report = ImportReport(str(path), sha256_file(path), n, len(faces), diff, tolerance)
    if not diff < tolerance:
        raise CheckpointError(
            f"{path}: weights copied but embeddings differ by {diff:.3g} >= {tolerance} on "
            f"{len(faces)} faces"
        )
    return ours, report
