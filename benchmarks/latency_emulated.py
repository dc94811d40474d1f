"""Emulated ARM latency of the PyTorch models, exported to ONNX (``vlrface.latency.emulate``).

Each model is freshly initialised (``torch.manual_seed(0)``, ``build_torch``), exported with
``vlrface.export.onnx.to_onnx`` at its preprocessing's input size, and run by onnxruntime's
aarch64 build under qemu-aarch64 with the instruction-count plugin. The table gives the guest
instructions per inference, the ms they stand for on each device of ``devices.yaml``, the
ARM-vs-x86 parity of the output, and the wall time of the emulation on this host.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/latency_emulated.py [--models A B] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vlrface.latency import emulate
from vlrface.latency.estimate import devices

MODELS = (
    "squeezefaceposenet",
    "squeezefaceposenet_dwc",
    "squeezefaceposenet_gdc",
    "squeezefaceposenet_dwc_gdc",
    "se_resnet50",
)


def export(name: str, out: Path) -> dict:
    """``name`` freshly initialised (seed 0), exported to ``out``; its input size and params."""
    import torch

    from vlrface.export.onnx import to_onnx
    from vlrface.models.torch import build_torch, count_params

    torch.manual_seed(0)
    model = build_torch(name)
    size = model.preprocessing.input_size
    out.write_bytes(to_onnx(model, size))
    return {"input_size": size, "params": count_params(model)}


def measure(name: str, workdir: Path, device_names: list[str]) -> dict:
    """One table row: export, then the emulated run (wall time of the emulation alone)."""
    path = workdir / f"{name}.onnx"
    info = export(name, path)
    start = time.perf_counter()
    result = emulate.emulate(path, device_names)
    return {**result, **info, "model": name, "wall_s": time.perf_counter() - start}


def table(rows: list[dict], device_names: list[str]) -> str:
    """A Markdown table of the rows."""
    head = ["model", "input", "params (M)", "M insns/inference"]
    head += [f"{d} ms" for d in device_names] + ["max abs diff", "1 - cosine", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["input_size"]), f"{r['params'] / 1e6:.2f}"]
        cells.append(f"{r['instructions'] / 1e6:.1f}")
        cells += [f"{r[f'latency.{d}.ms']:.1f}" for d in device_names]
        par = r["parity"]
        cells += [f"{par['max_abs_diff']:.2e}", f"{1 - par['cosine']:.1e}", f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--json", type=Path, help="also write the full results here")
    args = parser.parse_args()
    device_names = list(devices())
    emulate.setup()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlrface-bench-") as tmp:
        for name in args.models:
            rows.append(measure(name, Path(tmp), device_names))
            print(f"{name}: {rows[-1]['instructions'] / 1e6:.1f} M insns", flush=True)
    print(table(rows, device_names))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
