"""Calibrate the ARM cost model (``vlrface.latency.costmodel``) on the measured anchors.

Rebuilds every anchor network of notes/lce_arm.md §2f (random weights, as measured there),
converts it with LCE, extracts the cost features of the flatbuffer, fits the coefficients and
writes ``vlrface/latency/calibration.yaml``: coefficients, every anchor's features, its measured
and predicted instructions, and the error of the fit and of a leave-one-out fit on each.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/latency_calibration.py [--refit-only]

``--refit-only`` refits from the features already in the yaml (no conversions); ``--only A B``
converts only anchors A and B again.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from vlrface.latency import anchors, costmodel  # noqa: E402

OUT = Path(costmodel.__file__).with_name("calibration.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refit-only", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(anchors.ANCHORS), default=None)
    args = parser.parse_args()
    from tqdm import tqdm

    old = yaml.safe_load(OUT.read_text())["anchors"] if OUT.exists() else {}
    redo = [] if args.refit_only else (args.only or list(anchors.ANCHORS))
    feats = {}
    for name in tqdm(anchors.ANCHORS, desc="anchors", unit="model"):
        feats[name] = anchors.features(name) if name in redo else old[name]["features"]
    names = list(anchors.ANCHORS)
    y = [anchors.ANCHORS[n][0] for n in names]
    rows = [feats[n] for n in names]
    coef = costmodel.fit(rows, y)
    results = {}
    for i, name in enumerate(names):
        loo = costmodel.fit(rows[:i] + rows[i + 1 :], y[:i] + y[i + 1 :])
        pred = costmodel.predict_instructions(rows[i], coef)
        pred_loo = costmodel.predict_instructions(rows[i], loo)
        results[name] = {
            "measured_instructions": y[i],
            "what": anchors.ANCHORS[name][1],
            "predicted_instructions": round(pred),
            "error": round(pred / y[i] - 1, 4),
            "leave_one_out_error": round(pred_loo / y[i] - 1, 4),
            "features": feats[name],
        }
    errors = np.array([a["error"] for a in results.values()])
    loo_errors = np.array([a["leave_one_out_error"] for a in results.values()])
    doc = {
        "source": anchors.SOURCE,
        "coefficients": coef,
        "fixed_from_first_principles": costmodel.FIXED,
        "max_abs_error": float(np.abs(errors).max()),
        "max_abs_leave_one_out_error": float(np.abs(loo_errors).max()),
        "anchors": results,
    }
    header = "# Written by benchmarks/latency_calibration.py: do not edit by hand.\n"
    OUT.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    print(f"{'anchor':28s} {'measured M':>11s} {'predicted M':>12s} {'error':>7s} {'LOO':>7s}")
    for name, a in results.items():
        print(
            f"{name:28s} {a['measured_instructions'] / 1e6:11.2f} "
            f"{a['predicted_instructions'] / 1e6:12.2f} {a['error']:+7.1%} "
            f"{a['leave_one_out_error']:+7.1%}"
        )
    print("coefficients (instructions per unit):")
    for k, v in coef.items():
        print(f"  {k:18s} {v:.4g}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
