"""Table 2 for every zoo model: larq figures, LCE op census, ARM cost model, x86 LCE latency.

    .venv/bin/python benchmarks/efficiency.py [--models quicknet,binaryfacenet] [--runs 20]

MACs/params/size are ``larq.models.summary`` figures of the backbone (the paper's convention);
the census and latency are of the converted full model (with its 128-d head). Latency is LCE's
interpreter on THIS x86 machine, one thread, median of ``--runs``: x86 has only portable binary
kernels, so it does not rank models as an ARM core would (docs/arm-latency.md); the ARM columns
are the calibrated cost model's prediction (``vlrface.latency.costmodel``).
"""

import argparse
import json
import platform

import numpy as np

from vlrface.embedders import LCEEmbedder
from vlrface.export import lce
from vlrface.latency.costmodel import predict_instructions
from vlrface.latency.estimate import estimate_ms
from vlrface.latency.measure import median_ms
from vlrface.models.keras import ZOO, build_named
from vlrface.models.keras.efficiency import efficiency


def x86_latency_ms(flatbuffer: bytes, runs: int) -> float:
    run = LCEEmbedder(flatbuffer, num_threads=1)
    x = np.random.default_rng(0).normal(size=(1, 112, 112, 3)).astype(np.float32)
    return median_ms(lambda: run(x), runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        eff = efficiency(build_named(name, output_head=False))
        census = lce.census(flatbuffer := lce.convert(build_named(name)))
        ops = census["ops"]
        rows.append(
            {
                **eff,
                "model": name,
                "lce_binary_mac_share": census["binary_mac_share"],
                "lce_bconv": ops.get("LceBconv2d", 0),
                "lce_quantize": ops.get("LceQuantize", 0),
                "lce_float_conv": ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0),
                "tflite_kib": census["size_bytes"] / 1024,
                "arm_minsn": predict_instructions(census["cost_features"]) / 1e6,
                "rpi4_ms": estimate_ms(census["cost_features"], "raspberry-pi-4"),
                "x86_lce_ms_1thread": x86_latency_ms(flatbuffer, args.runs),
            }
        )
        print(f"done {name}", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, LCE interpreter, 1 thread\n")
    head = (
        "model",
        "binary MACs",
        "float MACs",
        "params",
        "MiB",
        "bin share",
        "bconv",
        "quantize",
        "float conv",
        "tflite KiB",
        "ARM M-insn (model)",
        "RPi4 ms (model)",
        "x86 ms",
    )
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r['model']} | {r['binary_macs']:,} | {r['float_macs']:,} | {r['params']:,} | "
            f"{r['size_mib']:.2f} | {r['lce_binary_mac_share']:.3f} | {r['lce_bconv']} | "
            f"{r['lce_quantize']} | {r['lce_float_conv']} | {r['tflite_kib']:.0f} | "
            f"{r['arm_minsn']:.1f} | {r['rpi4_ms']:.1f} | {r['x86_lce_ms_1thread']:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
