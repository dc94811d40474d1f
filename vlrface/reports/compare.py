"""Comparison tables of evaluation metrics (``eval.<protocol>.<variant>.<res>.<metric>``).

* ``compare({model: metrics, ...})``: one row per metric, one column per model, and for two
  models the difference (second - first) and which one is better (``eer``, ``fnir``, ``frr`` and
  ``acc_std`` are lower-is-better, everything else higher-is-better).
* ``resolution_table(metrics, protocol, metric)``: variants x resolutions of one metric, the
  layout of the papers' tables (BinaryFaceNet Tables 3-6, cross-resolution-learning Tables 1-8).
* ``run_metrics(run_ids)``: the ``eval.*`` metrics of MLflow runs, to feed ``compare``.
* ``to_markdown(df)``: a GitHub table (no extra dependency).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LOWER_IS_BETTER = ("eer", "fnir", "frr", "acc_std")


def higher_is_better(metric: str) -> bool:
    last = metric.rsplit(".", 1)[-1]
    return not any(last == k or last.startswith(f"{k}_") for k in LOWER_IS_BETTER)


def compare(results: dict[str, dict[str, float]], prefix: str = "eval.") -> pd.DataFrame:
    """Metrics (rows, those starting with ``prefix``) x models; ``delta``/``better`` for two."""
    names = sorted({k for m in results.values() for k in m if k.startswith(prefix)})
    df = pd.DataFrame(
        {model: [m.get(k, np.nan) for k in names] for model, m in results.items()}, index=names
    )
    df.index.name = "metric"
    if len(results) == 2:
        first, second = list(results)
        df["delta"] = df[second] - df[first]
        sign = np.array([1.0 if higher_is_better(k) else -1.0 for k in names])
        gain = sign * df["delta"].to_numpy()
        df["better"] = np.where(
            np.isnan(gain), "", np.where(gain > 0, second, np.where(gain < 0, first, "="))
        )
    return df


def resolution_table(metrics: dict[str, float], protocol: str, metric: str) -> pd.DataFrame:
    """``metric`` of ``protocol`` as variants (rows) x resolutions (columns, numeric order)."""
    rows = []
    for k, v in metrics.items():
        parts = k.split(".")
        if len(parts) == 5 and parts[0] == "eval" and parts[1] == protocol and parts[4] == metric:
            rows.append((parts[2], parts[3], v))
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows, columns=["variant", "res", "value"])
    table = df.pivot(index="variant", columns="res", values="value")
    key = lambda c: (0, int(c), "") if str(c).isdigit() else (1, 0, str(c))  # noqa: E731
    return table[sorted(table.columns, key=key)]


def run_metrics(run_ids, tracking_uri: str | None = None, prefix: str = "eval.") -> dict:
    """``{run_id: {metric: value}}`` of the MLflow runs' latest ``prefix`` metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return {
        r: {k: v for k, v in client.get_run(r).data.metrics.items() if k.startswith(prefix)}
        for r in run_ids
    }


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """``df`` as a GitHub-flavoured markdown table, floats rounded to ``digits``."""

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    head = [df.index.name or "", *map(str, df.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *(cell(v) for v in row)]) + " |")
    return "\n".join(lines)
