"""ARM cost model of an LCE flatbuffer: predicted single-thread instructions per inference.

A per-op model over the converted graph (``export.lce.op_table``): every op costs a linear
function of its own sizes, with coefficients per op *group* (the op type; ``:int8`` when it
works on int8 tensors; ``LceBconv2d:int8`` / ``LceBconv2d:bitpacked`` by output;
``LceQuantize:int8_fill`` for an int8 input with zero point -128, which LCE bitpacks as a
constant fill; ``CONV_2D:grouped`` for TF-Lite's grouped convolution). The terms depend on the
op's kind:

==============  ===========================================================================
kind            terms (instructions = sum of coefficient x term)
==============  ===========================================================================
conv            ``op`` (1), ``macs``, ``out`` (output elements), ``im2col`` (patch elements
                copied: out positions x kh x kw x cin, for kernels > 1x1 or strides)
depthwise, fc   ``op``, ``macs``, ``out``
bconv           ``op``, ``macs`` (binary), ``out`` (positions x cout), ``patch`` (bitpacked
                patch words: positions x kh x kw x input words)
pool            ``op``, ``window`` (output elements x pooling window)
reduce          ``op``, ``in`` (input elements)
quantize        ``op``, ``in`` (LceQuantize: float or int8 elements bitpacked)
elementwise,    ``op``, ``out`` (all output elements)
transcendental,
copies, convert
free            ``op`` (views: reshape, squeeze ...)
==============  ===========================================================================

Coefficients are fitted (``fit``) per group by non-negative least squares on per-op
instruction counts of real LCE aarch64 kernels under qemu-user (``-cpu cortex-a57``): the
project's exports, lce_arm_ops.csv (``opdata``; docs/arm-latency.md). A group without
measurements uses its op type's coefficients, else its kind's fallback (the median of the
measured groups of that kind). ``benchmarks/latency_calibration.py`` refits, checks every graph
and a leave-one-graph-out fit, and writes ``calibration.yaml``; devices.yaml turns instructions
into milliseconds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from vlrface.errors import VlrfaceError

KINDS = {
    "conv": "CONV_2D TRANSPOSE_CONV CONV_3D",
    "depthwise": "DEPTHWISE_CONV_2D",
    "fc": "FULLY_CONNECTED BATCH_MATMUL",
    "bconv": "LceBconv2d",
    "pool": "MAX_POOL_2D AVERAGE_POOL_2D L2_POOL_2D LceBMaxPool2d",
    "reduce": "MEAN SUM REDUCE_MAX REDUCE_MIN REDUCE_PROD ARG_MAX ARG_MIN",
    "quantize": "LceQuantize",
    "elementwise": "ADD SUB MUL PRELU RELU RELU6 RELU_N1_TO_1 LEAKY_RELU MAXIMUM MINIMUM ABS "
    "NEG ROUND FLOOR CEIL SELECT SELECT_V2 EQUAL NOT_EQUAL GREATER GREATER_EQUAL LESS LESS_EQUAL "
    "SQUARED_DIFFERENCE HARD_SWISH SIGN LOGICAL_AND LOGICAL_OR LOGICAL_NOT",
    "transcendental": "TANH LOGISTIC DIV EXP LOG SQRT RSQRT POW SOFTMAX LOG_SOFTMAX GELU "
    "L2_NORMALIZATION",
    "convert": "QUANTIZE DEQUANTIZE CAST LceDequantize",
    "copies": "CONCATENATION PAD PADV2 MIRROR_PAD SLICE STRIDED_SLICE SPLIT SPLIT_V TRANSPOSE "
    "GATHER PACK UNPACK TILE BROADCAST_TO DEPTH_TO_SPACE SPACE_TO_DEPTH RESIZE_BILINEAR "
    "RESIZE_NEAREST_NEIGHBOR",
    "free": "RESHAPE SQUEEZE EXPAND_DIMS SHAPE",
}
KIND = {op: kind for kind, ops in KINDS.items() for op in ops.split()}
BASE_TERMS = {
    "conv": ("op", "macs", "padded_macs", "out", "im2col", "im2col_rows"),
    "depthwise": ("op", "macs", "out"),
    "fc": ("op", "macs", "out"),
    "bconv": ("op", "macs", "padded_macs", "out", "patch", "out_bitpacked"),
    "pool": ("op", "window"),
    "reduce": ("op", "in"),
    "quantize": ("op", "in"),
    "elementwise": ("op", "out", "rows"),
    "transcendental": ("op", "out", "rows"),
    "convert": ("op", "out"),
    "copies": ("op", "out", "runs"),
    "free": ("op",),
}
# int8 tensors: the same sizes again as extra terms (``SIGNED``: int8 max pooling is
# cheaper than float), so int8 variants share the op's float structure
INT8_TERMS = {
    "conv": ("macs", "out"),
    "depthwise": ("macs", "out"),
    "fc": ("macs", "out"),
    "bconv": ("out",),
    "pool": ("window",),
    "reduce": ("in",),
    "quantize": ("in",),
    "elementwise": ("out",),
    "transcendental": ("out",),
    "convert": ("out",),
    "copies": ("out",),
    "free": (),
}
TERMS = {k: BASE_TERMS[k] + tuple(f"{t}_int8" for t in INT8_TERMS[k]) for k in BASE_TERMS}
SIGNED = {"window_int8"}  # int8 pooling is cheaper than float; other int8 extras are >= 0
WPOW = 0.3  # fit weight 1/count**WPOW: between relative (1) and absolute (0) error
PANEL = (8, 8, 4)  # ruy's float NEON kernel block: out channels x positions x depth (padding)
BPANEL = (8, 8, 2)  # LCE's aarch64 bgemm block: out channels x positions x depth words


class UnknownOpError(VlrfaceError):
    """The graph holds an op the cost model cannot price."""


def _n(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def group(row: dict) -> str:
    """The coefficient group of an ``op_table`` row (see the module docstring)."""
    op = row["op"]
    if op == "LceQuantize" and row.get("dtype") == "int8" and row.get("in_zero_point") == -128:
        return "LceQuantize:int8_fill"
    if op == "CONV_2D" and row["kernel"] and row["in"] and row["kernel"][3] < row["in"][3]:
        return "CONV_2D:grouped"
    return op


def _up(n: int, block: int) -> int:
    return -(-n // block) * block


def terms(row: dict) -> dict[str, float]:
    """The cost terms of one op (``TERMS`` of its kind; ``*_int8`` ones only on int8 data)."""
    op, kind = row["op"], KIND.get(row["op"])
    out, inp = row["out"], row["in"]
    t = {"op": 1.0}
    int8 = row.get("dtype") == "int8"
    if kind in ("conv", "depthwise", "fc"):
        t["macs"] = row["float_macs"]
        t["out"] = row["out_elems"]
        if kind == "conv":
            cout, kh, kw, cin = row["kernel"]
            positions = _n(out[1:3])
            strided = len(inp) == 4 and len(out) == 4 and inp[1:3] != out[1:3]
            copied = kh * kw > 1 or strided
            t["im2col"] = positions * kh * kw * cin if copied else 0
            t["im2col_rows"] = positions * kh * kw if copied else 0
            rows_, cols, depth = PANEL
            t["padded_macs"] = _up(cout, rows_) * _up(positions, cols) * _up(kh * kw * cin, depth)
    elif kind == "bconv":
        cout, kh, kw, words = row["kernel"]
        positions = _n(out[1:3])
        t.update(macs=row["binary_macs"], out=positions * cout, patch=positions * kh * kw * words)
        rows_, cols, depth = BPANEL
        padded = _up(cout, rows_) * _up(positions, cols) * kh * kw * _up(words, depth)
        t["padded_macs"] = 32 * padded
        t["out_bitpacked"] = positions * cout if row.get("out_dtype") == "int32" else 0
        int8 = row.get("out_dtype") == "int8"
    elif kind == "pool":
        t["window"] = row["out_elems"] * row["window"]
    elif kind in ("reduce", "quantize"):
        t["in"] = row["in_elems"]
    elif kind in ("elementwise", "transcendental", "convert", "copies"):
        t["out"] = row["out_elems"]
        if kind in ("elementwise", "transcendental"):
            t["rows"] = _n(out[:-1]) if len(out) > 1 else 1  # inner loops over the last axis
        elif kind == "copies":
            t["runs"] = row["copy_runs"]  # contiguous chunks copied
    elif kind is None:
        raise UnknownOpError(f"the ARM cost model cannot price op {op}")
    for name in INT8_TERMS[kind]:
        t[f"{name}_int8"] = t[name] if int8 else 0
    return {k: float(v) for k, v in t.items()}


def features(rows: list[dict]) -> dict:
    """Summed cost terms of an ``op_table``, keyed ``<group>.<term>``; ops the model cannot
    price are listed under ``unknown``."""
    f: dict = {}
    unknown = set()
    for row in rows:
        if row["op"] not in KIND:
            unknown.add(row["op"])
            continue
        g = group(row)
        for term, value in terms(row).items():
            f[f"{g}.{term}"] = f.get(f"{g}.{term}", 0.0) + value
    if unknown:
        f["unknown"] = sorted(unknown)
    return f


@lru_cache
def calibration() -> dict:
    """The fitted coefficients and the graphs they were checked on (``calibration.yaml``)."""
    return yaml.safe_load(Path(__file__).with_name("calibration.yaml").read_text())


def coefficient(key: str, model: dict) -> float:
    """The coefficient of feature ``<group>.<term>``: the group's, else its op type's, else the
    fallback of its kind."""
    g, term = key.rsplit(".", 1)
    coefs = model["coefficients"]
    for candidate in (g, g.split(":")[0]):
        if f"{candidate}.{term}" in coefs:
            return float(coefs[f"{candidate}.{term}"])
    kind = KIND[g.split(":")[0]]
    return float(model["fallback"].get(f"{kind}.{term}", 0.0))


def predict_instructions(feats: dict, model: dict | None = None) -> float:
    """Predicted aarch64 instructions per inference for summed ``features``."""
    if feats.get("unknown"):
        raise UnknownOpError(
            f"the ARM cost model cannot price op(s) {', '.join(feats['unknown'])}; "
            "count this model under emulation (latency.backend: emulated) or measure it on arm64"
        )
    model = model or calibration()
    return float(sum(coefficient(k, model) * v for k, v in feats.items()))


def predict_rows(rows: list[dict], model: dict | None = None) -> float:
    return predict_instructions(features(rows), model)


def _identifiable(a: np.ndarray, tol: float = 1e-3) -> tuple[list[int], list[int]]:
    """Columns of ``a`` taken in order while each adds a direction (relative singular value
    above ``tol``); the rest (all zero, or a combination of earlier ones) cannot be told apart
    on this data."""
    keep, rest = [], []
    for i in range(a.shape[1]):
        if not np.any(a[:, i]):
            continue
        trial = a[:, [*keep, i]]
        trial = trial / np.abs(trial).max(axis=0)
        sv = np.linalg.svd(trial, compute_uv=False)
        (keep if sv[-1] > tol * sv[0] else rest).append(i)
    return keep, rest


def fit(rows: list[dict], marker: float = 0.0) -> dict:
    """Coefficients per group by bounded least squares on per-op counts (``row["insns"]`` less
    ``marker``, the profiler's own instructions per op), each op weighted by 1/sqrt(its count)
    (big ops matter for a graph's total; small ones still count). Base coefficients are >= 0;
    ``*_int8`` ones are free. A term no measured op of the group has is left out (its op type's
    or kind's fallback applies). The kind fallbacks are the medians over the groups of each kind
    that have the term."""
    from scipy.optimize import lsq_linear

    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(group(row), []).append(row)
    coefs: dict[str, float] = {}
    for g, members in sorted(by_group.items()):
        names = TERMS[KIND[members[0]["op"]]]
        a = np.array([[terms(r)[k] for k in names] for r in members], np.float64)
        y = np.array([max(r["insns"] - marker, 1.0) for r in members], np.float64)
        w = 1.0 / np.maximum(y, 1000.0) ** WPOW
        keep, unidentified = _identifiable(a * w[:, None])
        for i in unidentified:  # proportional to earlier terms on this data: priced by them
            coefs[f"{g}.{names[i]}"] = 0.0
        a = a[:, keep]
        scale = np.abs(a).max(axis=0)
        lower = [-np.inf if names[i] in SIGNED else 0.0 for i in keep]
        c = lsq_linear(a * w[:, None] / scale, y * w, bounds=(lower, np.inf)).x
        for i, value, s in zip(keep, c, scale, strict=True):
            coefs[f"{g}.{names[i]}"] = float(value / s)
    fallback = {}
    for kind, names in TERMS.items():
        groups = sorted(g for g in by_group if KIND.get(g.split(":")[0]) == kind and ":" not in g)
        for name in names:
            values = [coefs[f"{g}.{name}"] for g in groups if f"{g}.{name}" in coefs]
            if values:
                fallback[f"{kind}.{name}"] = float(np.median(values))
    return {"coefficients": coefs, "fallback": fallback}
