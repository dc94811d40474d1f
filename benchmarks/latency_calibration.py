"""Fit the ARM cost model (``vlrface.latency.costmodel``) on per-op counts of LCE's real aarch64
kernels, check it per graph and leave-one-graph-out, and on graphs of its own held out of the fit.

Data: ``lce_arm_ops.csv`` (docs/arm-latency.md, the cost model; one row per op of 11 of the
project's exports, counted with the shared/tools/lce-aarch64 bundle under qemu-user). Graphs of our
own (``anchors``, random init, seed 0), converted with LCE: ``FIT_EXTRA`` ones are profiled op by
op under the same bundle and join the fit; ``HELD_OUT`` ones are counted (``emulate_lce``) and
compared with the fitted model.
Writes ``vlrface/latency/calibration.yaml`` (coefficients, every table and held-out figure).

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/latency_calibration.py \
        [--ops ../shared/notes/lce_arm_ops.csv] [--bundle ../shared/tools/lce-aarch64] \
        [--no-held-out]

The profiled rows go to ``vlrface/latency/profiled_ops.jsonl`` (one op per line), so a refit
needs no emulation: ``--no-held-out`` refits from them and keeps the stored held-out figures.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from vlrface.fileio import temporary_file  # noqa: E402
from vlrface.latency import anchors, costmodel, opdata  # noqa: E402

OUT = Path(costmodel.__file__).with_name("calibration.yaml")
PROFILED = Path(costmodel.__file__).with_name("profiled_ops.jsonl")
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


def fit_and_check(models: dict, extra: dict | None = None) -> tuple[dict, dict, float]:
    """The fit on every graph of ``models`` (the file's) and ``extra`` (our profiled graphs,
    ``{name: rows with insns}``), and each file graph's error, also left out of the fit."""
    marker = marker_insns(models)
    extra_rows = [r for rows in (extra or {}).values() for r in rows]
    model = costmodel.fit([r for m in models.values() for r in m["rows"]] + extra_rows, marker)
    table = {}
    for name, m in models.items():
        rest = [r for n, other in models.items() if n != name for r in other["rows"]]
        rest += extra_rows
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


def _convert(name: str) -> bytes:
    from vlrface._keras import tf
    from vlrface.export import lce

    tf.keras.utils.set_random_seed(0)
    return lce.convert(anchors.build(name))


def profiled_extra(bundle: Path) -> dict[str, list[dict]]:
    """Per-op counts of ``anchors.FIT_EXTRA`` under the bundle, as fit rows."""
    from tqdm import tqdm

    from vlrface.export import lce
    from vlrface.latency.emulate_lce import profile_ops

    binary, sysroot = bundle / "bin" / "lce_benchmark_model", bundle / "sysroot"
    out = {}
    for name in tqdm(anchors.FIT_EXTRA, desc="profiled graphs", unit="graph"):
        flatbuffer = _convert(name)
        with temporary_file(flatbuffer, f"{name}.tflite") as path:
            per_op = profile_ops(path, binary, sysroot, log=lambda _: None)
        out[name] = opdata.with_counts(lce.op_table(flatbuffer), per_op)
    return out


def held_out(bundle: Path, model: dict) -> dict:
    from tqdm import tqdm

    from vlrface.export import lce
    from vlrface.latency.emulate_lce import count_instructions

    binary, sysroot = bundle / "bin" / "lce_benchmark_model", bundle / "sysroot"
    results = {}
    for name in tqdm(anchors.HELD_OUT, desc="held-out graphs", unit="graph"):
        flatbuffer = _convert(name)
        with temporary_file(flatbuffer, f"{name}.tflite") as path:
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
    old = yaml.safe_load(OUT.read_text()) if OUT.exists() else {}
    if args.no_held_out:
        profiled = opdata.read_profiled(PROFILED)
    else:
        profiled = profiled_extra(args.bundle)
        opdata.write_profiled(PROFILED, profiled)
    model, table, marker = fit_and_check(models, profiled)
    extra = old.get("held_out", {}) if args.no_held_out else held_out(args.bundle, model)
    errors = np.array([t["error"] for t in table.values()])
    issue_loo = np.array([table[n]["leave_one_out_error"] for n in ISSUE_TABLE])
    doc = {
        "source": (
            "lce_arm_ops.csv (docs/arm-latency.md): per-op counts of LCE e6860fc aarch64 "
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
        "fit_extra": {n: anchors.FIT_EXTRA[n] for n in profiled},
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
