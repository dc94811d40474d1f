"""ARM cost model of an LCE flatbuffer: predicted single-thread instructions per inference.

LCE's ARM kernels cannot run here (no Linux aarch64 build exists in any registry), so the latency
gate prices the converted graph instead. Costs are additive per op (notes/lce_arm.md §2f: two
stacked blocks cost exactly twice one), so the model is linear in per-op features read from the
flatbuffer (``export.lce.op_table``):

=====================  ======================================================================
feature                what it counts (batch 1)
=====================  ======================================================================
``ops``                one per op (dispatch, tensor setup)
``bconv_macs``         binary MACs of ``LceBconv2d``
``bconv_out``          output elements of ``LceBconv2d`` (the float/threshold output
                       transform, per output channel and position)
``bconv_patch_words``  bitpacked im2col words (out H x W x k x k x input words)
``quantize``           float elements bitpacked by ``LceQuantize``
``float_macs``         MACs of dense ``CONV_2D`` and ``FULLY_CONNECTED`` (ruy/XNNPACK kernels)
``grouped_macs``       MACs of grouped float ``CONV_2D`` (TFLite's slow reference path)
``depthwise_macs``     MACs of ``DEPTHWISE_CONV_2D``
``elementwise``        output elements of cheap element-wise ops (add, mul, PReLU, ReLU,
                       round, select, LceDequantize ...)
``transcendental``     output elements of tanh, logistic, div, exp, softmax ...
``pooling``            input elements of pooling and reductions
``copies``             output elements of concatenation, pad, slice, transpose
=====================  ======================================================================

Three coefficients cannot be told apart by the anchors (every residual add follows a binary
conv's output one for one; tanh and grouped convs occur only in the published BinaryFaceNet),
so they are fixed from first principles (``FIXED``: a NEON float add is a load, a load, an add
and a store per four lanes, about 1 instruction per element; a copy about 0.5; a tanh or
logistic polynomial about 16). The others (instructions per unit) are fitted by non-negative
least squares on relative error against the measured anchors of notes/lce_arm.md §2f (real
LCE aarch64 kernels under qemu-user with an instruction-counting plugin, ``-cpu cortex-a57``):
the zoo models at 224 and at 112 px, a toy BNN and its float twin, single residual blocks at
four resolutions, and the published BinaryFaceNet (``anchors.py``).
``benchmarks/latency_calibration.py`` rebuilds every anchor, converts it with LCE, extracts its
features and writes ``calibration.yaml`` beside this file, with the fit's error on every
anchor. Instructions become milliseconds with a per-device constant (``devices.yaml``), itself
calibrated on published latencies.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from vlrface.errors import VlrfaceError

FEATURES = (
    "ops",
    "bconv_macs",
    "bconv_out",
    "bconv_patch_words",
    "quantize",
    "float_macs",
    "grouped_macs",
    "depthwise_macs",
    "elementwise",
    "transcendental",
    "pooling",
    "copies",
)

ELEMENTWISE = frozenset(
    "ADD SUB MUL PRELU RELU RELU6 RELU_N1_TO_1 LEAKY_RELU MAXIMUM MINIMUM ABS NEG "
    "ROUND FLOOR CEIL SELECT SELECT_V2 EQUAL NOT_EQUAL GREATER GREATER_EQUAL LESS "
    "LESS_EQUAL SQUARED_DIFFERENCE HARD_SWISH QUANTIZE DEQUANTIZE CAST SIGN "
    "LceDequantize".split()
)
TRANSCENDENTAL = frozenset(
    "TANH LOGISTIC DIV EXP LOG SQRT RSQRT POW SOFTMAX LOG_SOFTMAX GELU".split()
)
POOLING = frozenset(
    "MAX_POOL_2D AVERAGE_POOL_2D MEAN SUM REDUCE_MAX REDUCE_MIN REDUCE_PROD LceBMaxPool2d".split()
)
COPIES = frozenset(
    "CONCATENATION PAD PADV2 MIRROR_PAD SLICE STRIDED_SLICE SPLIT SPLIT_V TRANSPOSE "
    "GATHER PACK UNPACK TILE".split()
)
FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE"}  # views: one op's overhead only


#: coefficients set from first principles, not fitted (see the module docstring)
FIXED = {"elementwise": 1.0, "copies": 0.5, "transcendental": 16.0}


class UnknownOpError(VlrfaceError):
    """The graph holds an op the cost model cannot price."""


def _n(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def features(rows: list[dict]) -> dict[str, int]:
    """Sum the cost features of an ``op_table``; unknown ops are listed under ``unknown``."""
    f = dict.fromkeys(FEATURES, 0)
    unknown = set()
    for row in rows:
        op, out = row["op"], row["out"]
        f["ops"] += 1
        if op == "LceBconv2d":
            cout, kh, kw, in_words = row["kernel"]
            positions = _n(out[1:3])
            f["bconv_macs"] += row["binary_macs"]
            f["bconv_out"] += positions * cout
            f["bconv_patch_words"] += positions * kh * kw * in_words
        elif op == "LceQuantize":
            f["quantize"] += _n(row["in"])
        elif op == "CONV_2D" and row["kernel"][3] < row["in"][3]:
            f["grouped_macs"] += row["float_macs"]
        elif op in ("CONV_2D", "FULLY_CONNECTED"):
            f["float_macs"] += row["float_macs"]
        elif op == "DEPTHWISE_CONV_2D":
            f["depthwise_macs"] += row["float_macs"]
        elif op in ELEMENTWISE:
            f["elementwise"] += _n(out)
        elif op in TRANSCENDENTAL:
            f["transcendental"] += _n(out)
        elif op in POOLING:
            f["pooling"] += _n(row["in"])
        elif op in COPIES:
            f["copies"] += _n(out)
        elif op not in FREE:
            unknown.add(op)
    if unknown:
        f["unknown"] = sorted(unknown)
    return f


@lru_cache
def calibration() -> dict:
    """The fitted coefficients and the anchors they were fitted on (``calibration.yaml``)."""
    return yaml.safe_load(Path(__file__).with_name("calibration.yaml").read_text())


def predict_instructions(feats: dict, coefficients: dict[str, float] | None = None) -> float:
    """Predicted aarch64 instructions per inference for summed ``features``."""
    if feats.get("unknown"):
        raise UnknownOpError(
            f"the ARM cost model cannot price op(s) {', '.join(feats['unknown'])}; "
            "measure this model on arm64 (latency.source=measured) instead"
        )
    coefficients = coefficients or calibration()["coefficients"]
    return float(sum(coefficients[k] * feats[k] for k in FEATURES))


def fit(feature_rows: list[dict], instructions: list[float]) -> dict[str, float]:
    """The coefficient of every feature: ``FIXED`` ones as they are, the others by non-negative
    least squares on relative error of what the fixed ones leave."""
    from scipy.optimize import nnls

    free = [k for k in FEATURES if k not in FIXED]
    y = np.asarray(instructions, np.float64)
    rest = y - np.array([sum(FIXED[k] * row[k] for k in FIXED) for row in feature_rows])
    a = np.array([[row[k] for k in free] for row in feature_rows], np.float64) / y[:, None]
    scale = np.maximum(a.max(axis=0), 1e-30)  # condition the columns
    coef, _ = nnls(a / scale, rest / y)
    fitted = {k: float(c / s) for k, c, s in zip(free, coef, scale, strict=True)}
    return {k: FIXED.get(k, fitted.get(k)) for k in FEATURES}
