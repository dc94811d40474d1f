"""Per-op instruction measurements of LCE flatbuffers, as ``export.lce.op_table`` rows.

The cost model (``costmodel``) is fitted on per-op counts of real LCE aarch64 kernels: one row
per op instance, with its inputs and outputs as ``dtype[shape]`` (``const:`` marks a constant
buffer, ``-`` an absent optional input), its attributes (``key=value`` words), binary or float
MACs and the instructions of one steady-state inference (the format of lce_arm_ops.csv,
written by the bundle's ``profile.sh``; each model's ``total`` row holds its ``count.sh`` figure).
``read`` turns such a file into ``{model: {"rows": [...], "total": ..., "sum_of_ops": ...}}``
where every row has the keys ``op_table`` gives for a flatbuffer, plus ``insns``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from vlrface.errors import VlrfaceError

_TENSOR = re.compile(r"^(const:)?(\w+)\[([0-9x]*)\]$")


class OpDataError(VlrfaceError):
    """A per-op measurement file that cannot be read."""


def _tensor(text: str, where: str) -> dict | None:
    if text == "-":
        return None
    found = _TENSOR.match(text)
    if not found:
        raise OpDataError(f"{where}: cannot read tensor {text!r} (want dtype[AxB] or const:...)")
    const, dtype, dims = found.groups()
    shape = [int(d) for d in dims.split("x")] if dims else []
    return {"const": bool(const), "dtype": dtype, "shape": shape}


def _attrs(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def _n(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def row_from_tensors(
    op: str,
    inputs: list[dict | None],
    outputs: list[dict],
    binary_macs: int = 0,
    float_macs: int = 0,
    window: int = 0,
    in_zero_point: int | None = None,
) -> dict:
    """An ``op_table`` row from an op's tensors (``{"const", "dtype", "shape"}`` each)."""
    present = [t for t in inputs if t is not None]
    data = [t for t in present if not t["const"]] or present
    main = max(data, key=lambda t: _n(t["shape"])) if data else None
    kernel = present[1]["shape"] if len(present) > 1 else []
    # contiguous chunks a copy moves, taking the copy along the last axis (channels)
    pieces = data if op in ("CONCATENATION", "PACK") else outputs
    runs = sum(_n(t["shape"][:-1]) for t in pieces if len(t["shape"]) > 1)
    return {
        "op": op,
        "in": main["shape"] if main else [],
        "out": outputs[0]["shape"],
        "kernel": kernel,
        "dtype": main["dtype"] if main else outputs[0]["dtype"],
        "out_dtype": outputs[0]["dtype"],
        "in_elems": _n(main["shape"]) if main else 0,
        "out_elems": sum(_n(t["shape"]) for t in outputs),
        "window": window,
        "copy_runs": runs,
        "in_zero_point": in_zero_point,
        "bitpacked_out": outputs[0]["dtype"] == "int32" and op.startswith("Lce"),
        "int8_out": outputs[0]["dtype"] == "int8",
        "binary_macs": int(binary_macs),
        "float_macs": int(float_macs),
    }


def read(path: str | Path) -> dict[str, dict]:
    """Every model of a per-op measurement file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise OpDataError(f"{path}: no such file")
    models: dict[str, dict] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"model", "op_index", "op_type", "inputs", "outputs", "attrs", "macs", "insns"}
        if not need <= set(reader.fieldnames or ()):
            raise OpDataError(f"{path}: needs the columns {sorted(need)}")
        for line, rec in enumerate(reader, start=2):
            where = f"{path}:{line}"
            model = models.setdefault(rec["model"], {"rows": []})
            try:
                insns = float(rec["insns"])
            except ValueError:
                raise OpDataError(f"{where}: insns {rec['insns']!r} is not a number") from None
            if rec["op_index"] == "total":
                attrs = _attrs(rec["attrs"] or rec["outputs"] or "")
                model["total"] = insns
                model["sum_of_ops"] = float(attrs.get("sum_of_ops", "nan"))
                continue
            op = rec["op_type"]
            inputs = [_tensor(t, where) for t in rec["inputs"].split(";") if t]
            outputs = [_tensor(t, where) for t in rec["outputs"].split(";") if t]
            attrs = _attrs(rec["attrs"])
            macs = int(float(rec["macs"])) if rec["macs"] else 0
            window = _n([int(d) for d in attrs["pool"].split("x")]) if "pool" in attrs else 0
            row = row_from_tensors(
                op,
                inputs,
                outputs,
                binary_macs=macs if op == "LceBconv2d" else 0,
                float_macs=0 if op == "LceBconv2d" else macs,
                window=window,
            )
            row["attrs"] = attrs
            row["insns"] = insns
            model["rows"].append(row)
    for name, model in models.items():
        if "total" not in model:
            raise OpDataError(f"{path}: model {name!r} has no 'total' row")
        _infer_constant_fill(model["rows"])
    return models


def _infer_constant_fill(rows: list[dict]) -> None:
    """The file has no zero points: an int8 ``LceQuantize`` right after an ``LceBconv2d`` with
    a fused ReLU and int8 output of the same shape reads a tensor with zero point -128 (its range
    starts at 0), the case LCE bitpacks as a constant fill. A flatbuffer states the zero point."""
    for prev, row in zip(rows, rows[1:], strict=False):
        if (
            row["op"] == "LceQuantize"
            and row["dtype"] == "int8"
            and prev["op"] == "LceBconv2d"
            and prev["out_dtype"] == "int8"
            and prev.get("attrs", {}).get("act") == "RELU"
            and prev["out"] == row["in"]
        ):
            row["in_zero_point"] = -128


def with_counts(rows: list[dict], per_op: dict[int, int]) -> list[dict]:
    """``op_table`` rows of a flatbuffer with each op's measured ``insns`` (by node index, as
    ``emulate_lce.profile_ops`` gives them): rows the fit can use like the file's."""
    if set(per_op) != set(range(len(rows))):
        raise OpDataError(f"per-op counts for {len(per_op)} ops, the graph has {len(rows)}")
    return [{**row, "insns": float(per_op[i])} for i, row in enumerate(rows)]


def write_profiled(path: str | Path, graphs: dict[str, list[dict]]) -> None:
    """Per-op rows of our own profiled graphs, one JSON object per line (``graph`` added)."""
    lines = [json.dumps({"graph": g, **row}, sort_keys=True) for g, rows in graphs.items()
             for row in rows]  # fmt: skip
    Path(path).write_text("\n".join(lines) + "\n")


def read_profiled(path: str | Path) -> dict[str, list[dict]]:
    """``write_profiled``'s file back: ``{graph: rows}``."""
    graphs: dict[str, list[dict]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise OpDataError(f"{path}:{number}: not a JSON object") from None
        graphs.setdefault(row.pop("graph"), []).append(row)
    return graphs
