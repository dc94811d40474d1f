"""Fit the ARM cost model (``vlrface.latency.costmodel``) on per-op counts of LCE's real aarch64
kernels, check it per graph and leave-one-graph-out, and on graphs of its own held out of the fit.

Data: ``lce_arm_ops.csv`` of notes/lce_arm.md Addendum 3 (one row per op of 11 of the project's
exports, counted with the shared/tools/lce-aarch64 bundle under qemu-user). Held-out graphs:
networks built here (``anchors.HELD_OUT``, random init, seed 0), converted with LCE and counted
for real under the same bundle (``emulate_lce``), then compared with the fitted model.
Writes ``vlrface/latency/calibration.yaml`` (coefficients, every table and held-out figure).

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/latency_calibration.py \
        [--ops ../shared/notes/lce_arm_ops.csv] [--bundle ../shared/tools/lce-aarch64] \
        [--no-held-out]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from vlrface.latency import anchors, costmodel, opdata  # noqa: E402

OUT = Path(costmodel.__file__).with_name("calibration.yaml")
ROOT = Path(__file__).resolve().parents[1]
#: the issue's table (exports of `vlrface export lce`): the goal is +-10 % on each
ISSUE_TABLE = (
    "quicknet quicknet_small binarydensenet28 binaryfacenet_lce binaryfacenet "
    "binaryfacenet_authors binaryfacenet_lce_int8 quicknet_int8"
).split()


def marker_insns(models: dict) -> float:
    """The profiler's own instructions per op: (sum of ops - count.sh total) / ops, mean."""
    per_op = [(m["sum_of_ops"] - m["total"]) / len(m["rows"]) for m in models.values()]
    return float(np.mean(per_op))


def fit_and_check(models: dict) -> tuple[dict, dict, float]:
    marker = marker_insns(models)
    model = costmodel.fit([r for m in models.values() for r in m["rows"]], marker)
    table = {}
    for name, m in models.items():
        rest = [r for n, other in models.items() if n != name for r in other["rows"]]
        loo = costmodel.fit(rest, marker)
        pred = costmodel.predict_rows(m["rows"], model)
        pred_loo = costmodel.predict_rows(m["rows"], loo)
        table[name] = {
            "real_instructions": round(m["total"]),
            "predicted_instructions": round(pred),
            "error": round(pred / m["total"] - 1, 4),
            "leave_one_out_error": round(pred_loo / m["total"] - 1, 4),
            "in_issue_table": name in ISSUE_TABLE,
        }
    return model, table, marker


def held_out(bundle: Path, model: dict) -> dict:
    from tqdm import tqdm

    from vlrface.export import lce
    from vlrface.latency.emulate_lce import count_instructions

    binary, sysroot = bundle / "bin" / "lce_benchmark_model", bundle / "sysroot"
    results = {}
    from vlrface._keras import tf

    for name in tqdm(anchors.HELD_OUT, desc="held-out graphs", unit="graph"):
        tf.keras.utils.set_random_seed(0)
        flatbuffer = lce.convert(anchors.build(name))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, f"{name}.tflite")
            path.write_bytes(flatbuffer)
            real = count_instructions(path, binary, sysroot, log=lambda _: None)["instructions"]
        pred = costmodel.predict_instructions(lce.census(flatbuffer)["cost_features"], model)
        results[name] = {
            "what": anchors.HELD_OUT[name],
            "emulated_instructions": round(real),
            "predicted_instructions": round(pred),
            "error": round(pred / real - 1, 4),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=Path, default=ROOT.parent / "shared/notes/lce_arm_ops.csv")
    parser.add_argument("--bundle", type=Path, default=ROOT.parent / "shared/tools/lce-aarch64")
    parser.add_argument("--no-held-out", action="store_true", help="keep the stored held-out")
    args = parser.parse_args()

    models = opdata.read(args.ops)
    model, table, marker = fit_and_check(models)
    old = yaml.safe_load(OUT.read_text()) if OUT.exists() else {}
    extra = old.get("held_out", {}) if args.no_held_out else held_out(args.bundle, model)
    errors = np.array([t["error"] for t in table.values()])
    issue_loo = np.array([table[n]["leave_one_out_error"] for n in ISSUE_TABLE])
    doc = {
        "source": (
            "notes/lce_arm.md Addendum 3, lce_arm_ops.csv: per-op counts of LCE e6860fc aarch64 "
            "kernels + TF-Lite 2.14.1 builtins under qemu-aarch64 -cpu cortex-a57 (bundle "
            "shared/tools/lce-aarch64); held-out graphs counted with the same bundle"
        ),
        "marker_insns_per_op": round(marker, 2),
        "fit_weight_power": costmodel.WPOW,
        "max_abs_error": float(np.abs(errors).max()),
        "max_abs_leave_one_out_error_issue_table": float(np.abs(issue_loo).max()),
        "max_abs_held_out_error": float(max((abs(h["error"]) for h in extra.values()), default=0)),
        "coefficients": model["coefficients"],
        "fallback": model["fallback"],
        "graphs": table,
        "held_out": extra,
    }
    header = "# Written by benchmarks/latency_calibration.py: do not edit by hand.\n"
    OUT.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    print(f"{'graph':34s} {'real M':>8s} {'model M':>8s} {'error':>7s} {'LOO':>7s}")
    for name, t in table.items():
        mark = "" if t["in_issue_table"] else "  (not in the issue's table)"
        print(
            f"{name:34s} {t['real_instructions'] / 1e6:8.2f} "
            f"{t['predicted_instructions'] / 1e6:8.2f} {t['error']:+7.1%} "
            f"{t['leave_one_out_error']:+7.1%}{mark}"
        )
    print(f"\n{'held-out graph':34s} {'emul. M':>8s} {'model M':>8s} {'error':>7s}")
    for name, h in extra.items():
        print(
            f"{name:34s} {h['emulated_instructions'] / 1e6:8.2f} "
            f"{h['predicted_instructions'] / 1e6:8.2f} {h['error']:+7.1%}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
