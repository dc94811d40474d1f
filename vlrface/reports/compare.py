"""Comparison tables of evaluation metrics (``eval.<protocol>.<variant>.<res>.<metric>``).

* ``compare({model: metrics, ...})``: one row per metric, one column per model, and for two
  models the difference (second - first) and which one is better (``eer``, ``fnir``, ``frr`` and
  ``acc_std`` are lower-is-better, everything else higher-is-better).
* ``resolution_table(metrics, protocol, metric)``: variants x resolutions of one metric, the
  layout of the papers' tables (BinaryFaceNet Tables 3-6, cross-resolution-learning Tables 1-8).
* ``run_metrics(run_ids)``: the ``eval.*`` metrics of MLflow runs, to feed ``compare``.
* ``to_markdown(df)``: a GitHub table (no extra dependency).
* ``side_by_side``, ``report_tables``, ``render_report``: registered models side by side in
  the papers' layouts (models x resolutions per protocol, variant and metric), the report of
  ``vlrface report``.
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


# ------------------------------------------------------------------ the side-by-side report


def split_name(metric: str) -> tuple[str, str, str, str] | None:
    """``eval.<protocol>.<variant>.<res>.<metric>`` -> its four parts, else ``None``."""
    parts = metric.split(".")
    if len(parts) != 5 or parts[0] != "eval":
        return None
    return parts[1], parts[2], parts[3], parts[4]


def _res_key(c) -> tuple:
    return (0, int(c), "") if str(c).isdigit() else (1, 0, str(c))


def side_by_side(
    results: dict[str, dict[str, float]], protocol: str, variant: str, metric: str
) -> pd.DataFrame:
    """The papers' layout of one metric: models (rows, in ``results`` order) x resolutions
    (columns, numeric order, then ``full``/``native``/named slots)."""
    cells: dict[str, dict[str, float]] = {}
    for model, metrics in results.items():
        for k, v in metrics.items():
            parts = split_name(k)
            if parts and parts[0] == protocol and parts[1] == variant and parts[3] == metric:
                cells.setdefault(model, {})[parts[2]] = float(v)
    columns = sorted({c for row in cells.values() for c in row}, key=_res_key)
    df = pd.DataFrame(
        [[cells.get(m, {}).get(c, np.nan) for c in columns] for m in results],
        index=list(results),
        columns=columns,
    )
    df.index.name = "model"
    return df


def report_tables(results: dict[str, dict[str, float]]) -> list[tuple[str, pd.DataFrame]]:
    """``(title, table)`` per protocol and variant, models side by side: one table per metric
    (columns the resolutions) where a variant has several resolutions, else one table of its
    metrics (columns the metrics) at its one resolution, as TinyFace's rank/mAP tables."""
    groups: dict[tuple[str, str], dict[str, set]] = {}
    for metrics in results.values():
        for k in metrics:
            parts = split_name(k)
            if parts:
                g = groups.setdefault(parts[:2], {"res": set(), "metrics": []})
                g["res"].add(parts[2])
                if parts[3] not in g["metrics"]:
                    g["metrics"].append(parts[3])
    tables = []
    for (protocol, variant), g in sorted(groups.items()):
        if len(g["res"]) > 1:
            for metric in g["metrics"]:
                title = f"{protocol} {variant}: {metric} by resolution"
                tables.append((title, side_by_side(results, protocol, variant, metric)))
        else:
            (res,) = g["res"]
            df = pd.DataFrame(
                [
                    [
                        results[m].get(f"eval.{protocol}.{variant}.{res}.{k}", np.nan)
                        for k in g["metrics"]
                    ]
                    for m in results
                ],
                index=list(results),
                columns=g["metrics"],
            )
            df.index.name = "model"
            tables.append((f"{protocol} {variant} at {res}", df))
    return tables


def render_report(
    results: dict[str, dict[str, float]], models: list[dict], html: bool = False, digits: int = 4
) -> str:
    """The comparison report of registered models: a table of the models (``models``: one dict
    per model, its ``label``, ``name``, ``version``, ``aliases``, ``run_id``, ``dataset``,
    ``synthetic``), one side-by-side table per protocol/variant (``report_tables``), then every
    metric (``compare``: with ``delta``/``better`` for two models). Markdown, or HTML."""
    head = pd.DataFrame(
        [
            [
                m["name"],
                m["version"],
                ", ".join(m.get("aliases") or []),
                m.get("dataset") or "",
                m.get("synthetic") or "",
                (m.get("run_id") or "")[:12],
            ]
            for m in models
        ],
        index=[m["label"] for m in models],
        columns=["registered model", "version", "aliases", "dataset", "synthetic data", "run"],
    )
    head.index.name = "model"
    sections = [("Models", head)]
    sections += report_tables(results)
    if results and any(results.values()):
        sections.append(("All evaluation metrics", compare(results)))
    note = (
        "Metrics are those recorded with each registered version (its run's `eval.*` "
        "metrics, and its `metric.eval.*` tags where the run lacks them); names "
        "`eval.<protocol>.<variant>.<res>.<metric>`. Empty cells: the model has no such metric."
    )
    if not html:
        parts = ["# Model comparison", "", note]
        for title, df in sections:
            parts += ["", f"## {title}", "", to_markdown(df, digits)]
        return "\n".join(parts) + "\n"
    import html as html_lib

    def fmt(v):
        return "" if isinstance(v, float) and np.isnan(v) else f"{v:.{digits}f}"

    body = [f"<h1>Model comparison</h1>\n<p>{html_lib.escape(note)}</p>"]
    for title, df in sections:
        body.append(f"<h2>{html_lib.escape(title)}</h2>")
        # the index as the first column: one header row (a named index adds a second)
        table = df.reset_index()
        body.append(
            table.to_html(float_format=fmt, na_rep="", border=0, classes="vlrface", index=False)
        )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Model comparison</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def version_metrics(client, mv, prefix: str = "eval.") -> dict[str, float]:
    """The ``prefix`` metrics of a registered version ``mv``: its run's logged metrics (exact),
    and its ``metric.<name>`` tags (``vlrface/registration.py``, 6 significant digits) for names
    the run lacks (a deleted run, a version registered by hand). A stage version's are only its
    tags (``registry.own_run``)."""
    from mlflow.exceptions import MlflowException

    from vlrface.registry import own_run

    out: dict[str, float] = {}
    for k, v in dict(mv.tags).items():
        if k.startswith(f"metric.{prefix}"):
            try:
                out[k[len("metric.") :]] = float(v)
            except ValueError:
                continue
    if mv.run_id and own_run(mv):
        try:
            run = client.get_run(mv.run_id)
        except MlflowException:
            return out
        out.update({k: float(v) for k, v in run.data.metrics.items() if k.startswith(prefix)})
    return out
