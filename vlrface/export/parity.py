"""Parity of an exported model with the model it came from (framework-free).

Both export paths (``vlrface.export.lce``: Keras vs LCE's interpreter; ``vlrface.export.onnx``:
PyTorch vs onnxruntime) and the emulated ARM run (``vlrface.latency.emulate``: aarch64 vs x86
onnxruntime) compare two outputs of the same inputs the same way: per-row cosine (min, mean)
and max abs diff. ``floor`` turns the figures into the export report's parity entries, or
refuses below the configured cosine floor.
"""

from __future__ import annotations

import numpy as np

from vlrface.errors import VlrfaceError


class ParityError(VlrfaceError):
    """The exported model disagrees with the model it came from beyond the configured floor."""


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-row cosine (``cosine_min``, ``cosine_mean``), ``max_abs_diff`` and the row count
    (``samples``) of two outputs of the same inputs, each flattened per row."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"output shape {a.shape} differs from {b.shape}")
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    cos = (a * b).sum(1) / norms
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
        "samples": int(len(a)),
    }


def compare(reference, exported, inputs: np.ndarray) -> dict:
    """``agreement`` of two embedders (``vlrface.embedders``) on the same ``inputs``."""
    return agreement(reference(inputs), exported(inputs))


def floor(
    par: dict, min_cosine: float, what: str, error: type[ParityError] = ParityError, note: str = ""
) -> dict:
    """The report's ``parity``, ``parity_min_cosine`` and ``parity_passed`` entries; raises
    ``error`` naming ``what`` (and ``note``) when ``par``'s minimum cosine is below
    ``min_cosine``."""
    if par["cosine_min"] < min_cosine:
        raise error(
            f"{what} parity cosine {par['cosine_min']:.6f} < floor {min_cosine} "
            f"(max abs diff {par['max_abs_diff']:.4g}, {par['samples']} inputs){note}"
        )
    return {"parity": par, "parity_min_cosine": min_cosine, "parity_passed": True}
