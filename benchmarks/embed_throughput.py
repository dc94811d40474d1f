"""Embedding throughput (images/s) of each runtime backend, at batch 1 and batch 32, on this CPU.

    .venv/bin/python benchmarks/embed_throughput.py [--seconds 3] [--threads 1] [--json out.json]

Models (freshly initialised: throughput does not depend on the weights), each run through the
``vlrface.embedders`` class the protocols use, on random normalised NHWC float32 faces:

* ``binaryfacenet`` (the faithful DoReFa BinaryFaceNet, 112 px) and ``binaryfacenet_lce`` (the
  LCE-native variant, 112 px): ``KerasEmbedder`` (TensorFlow, ``--threads`` intra-op threads)
  and ``LCEEmbedder`` (the LCE flatbuffer from ``vlrface.export.lce.convert`` in LCE's
  interpreter, one thread, as the issue asks);
* ``squeezefaceposenet`` (PyTorch, 113 px): ``TorchEmbedder`` (``torch.set_num_threads``
  ``--threads``) and ``ONNXEmbedder`` (the graph of ``vlrface.export.onnx.to_onnx``, dynamic
  batch, onnxruntime CPU, ``--threads`` intra-op threads).

Each (model, backend, batch) is warmed up (3 calls), then called repeatedly for at least
``--seconds`` seconds and ``--min-calls`` calls; images/s = images embedded / wall time, and ms per
call is the median call. The flip test-time augmentation is not included (it doubles the work).
The machine's load average is printed with the table: on a shared machine the figures are
lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

BATCHES = (1, 32)


def measure(embedder, size: int, batch: int, seconds: float, min_calls: int) -> dict:
    """Throughput of ``embedder`` on random ``(batch, size, size, 3)`` inputs."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    for _ in range(3):
        out = embedder(x)
    assert out.shape[0] == batch, out.shape
    calls = []
    start = time.perf_counter()
    while len(calls) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        embedder(x)
        calls.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {
        "images_per_s": batch * len(calls) / wall,
        "ms_per_call": 1000 * statistics.median(calls),
        "calls": len(calls),
        "dim": int(out.shape[1]),
    }


def keras_backends(name: str, threads: int):
    """``(input size, {backend: embedder})`` of a Keras zoo model and its LCE flatbuffer."""
    from vlrface.embedders import KerasEmbedder, LCEEmbedder
    from vlrface.export.lce import convert
    from vlrface.models.keras import build_named

    model = build_named(name)
    size = int(model.input_shape[1])
    return size, {
        f"Keras (TF, {threads} thr)": KerasEmbedder(model),
        "LCE interpreter (1 thr)": LCEEmbedder(convert(model), num_threads=1),
    }


def torch_backends(name: str, threads: int):
    """``(input size, {backend: embedder})`` of a PyTorch zoo model and its ONNX export."""
    import torch

    from vlrface.embedders import ONNXEmbedder, TorchEmbedder
    from vlrface.export.onnx import to_onnx
    from vlrface.models.torch import build_torch

    torch.set_num_threads(threads)
    model = build_torch(name).eval()
    size = model.preprocessing.input_size
    return size, {
        f"PyTorch ({threads} thr)": TorchEmbedder(model),
        f"ONNX Runtime ({threads} thr)": ONNXEmbedder(to_onnx(model, size), num_threads=threads),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Time per measurement.")
    parser.add_argument("--min-calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="TF/PyTorch/ONNX threads.")
    parser.add_argument(
        "--models",
        default="binaryfacenet,binaryfacenet_lce,squeezefaceposenet",
        help="Comma-separated: Keras zoo names and/or PyTorch zoo names.",
    )
    parser.add_argument("--json", type=Path, help="Also write the results as JSON.")
    args = parser.parse_args(argv)

    from vlrface._keras import tf
    from vlrface.models.keras import ZOO

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    rows = []
    for name in args.models.split(","):
        t = time.perf_counter()
        size, backends = (keras_backends if name in ZOO else torch_backends)(name, args.threads)
        print(f"{name}: built and converted in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for backend, embedder in backends.items():
            for batch in BATCHES:
                r = measure(embedder, size, batch, args.seconds, args.min_calls)
                rows.append({"model": name, "backend": backend, "batch": batch, **r})
                print(
                    f"  {backend:26s} batch {batch:2d}: {r['images_per_s']:8.1f} img/s",
                    file=sys.stderr,
                )

    load = os.getloadavg()
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; "
        f"{args.seconds:g} s per cell, no flip TTA\n"
    )
    head = "| model | backend | img/s, batch 1 | ms/call | img/s, batch 32 | ms/call |"
    print(head)
    print("|---|---|---|---|---|---|")
    cells = {(r["model"], r["backend"], r["batch"]): r for r in rows}
    for model, backend in dict.fromkeys((r["model"], r["backend"]) for r in rows):
        one, many = cells[(model, backend, 1)], cells[(model, backend, 32)]
        print(
            f"| {model} | {backend} | {one['images_per_s']:.1f} | {one['ms_per_call']:.2f} | "
            f"{many['images_per_s']:.1f} | {many['ms_per_call']:.1f} |"
        )
    if args.json:
        payload = {"load_average": load, "cpus": os.cpu_count(), "args": vars(args), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
