"""Great Expectations (1.x) suites over a manifest; a failed suite stops the pipeline.

GX is called directly (an ephemeral context over the manifest DataFrame), not through ZenML's GX
integration, which pins GX < 1. Per-identity facts (image count, number of splits) are added as
columns first, so every rule is a plain column expectation whose failures name rows by ``path``.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from vlrface.data.records import DataError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
logging.getLogger("great_expectations").setLevel(logging.WARNING)


class DataValidationError(DataError):
    """A suite failed; the message names the failing expectations and offending rows."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def _frame(manifest: pd.DataFrame) -> pd.DataFrame:
    df = manifest.copy()
    df["identity_images"] = df.groupby("identity")["path"].transform("count")
    df["identity_splits"] = df.groupby("identity")["split"].transform("nunique")
    return df.reset_index(drop=True)


def face_manifest_suite(name: str, image_size: int, min_images: int = 2):
    """The expectations every face manifest must meet."""
    import great_expectations as gx

    E = gx.expectations
    suite = gx.ExpectationSuite(name=name)
    for exp in [
        E.ExpectColumnValuesToNotBeNull(column="path"),
        E.ExpectColumnValuesToBeUnique(column="path"),
        E.ExpectColumnValuesToNotBeNull(column="identity"),
        E.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="width", min_value=image_size, max_value=image_size),
        E.ExpectColumnValuesToBeBetween(column="height", min_value=image_size,
                                        max_value=image_size),
        E.ExpectColumnValuesToBeInSet(column="channels", value_set=[3]),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"]),
        E.ExpectColumnValuesToBeBetween(column="identity_images", min_value=min_images),
        # an identity on both sides of the split would leak test faces into training
        E.ExpectColumnValuesToBeInSet(column="identity_splits", value_set=[1]),
    ]:
        suite.add_expectation(exp)
    return suite


def _describe_failure(r: dict) -> str:
    cfg = r["expectation_config"]
    col = cfg["kwargs"].get("column", "")
    res = r.get("result", {})
    rows = res.get("unexpected_index_list") or []
    paths = [row["path"] for row in rows[:3] if isinstance(row, dict) and "path" in row]
    count = res.get("unexpected_count", "?")
    where = f"; e.g. {', '.join(paths)}" if paths else ""
    return f"{cfg['type']}({col}): {count} row(s) fail{where}"


def validate_manifest(
    manifest: pd.DataFrame, name: str, image_size: int, min_images: int = 2
) -> dict:
    """Run the suite; return GX's result as a dict, or raise ``DataValidationError``."""
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    batch = (
        ctx.data_sources.add_pandas("faces").add_dataframe_asset("manifest")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = ctx.suites.add(face_manifest_suite(name, image_size, min_images))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    result = vd.run(
        batch_parameters={"dataframe": _frame(manifest)},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"],
                       "partial_unexpected_count": 3},
    )
    out = result.describe_dict()
    if not result.success:
        failed = [r for r in result.to_json_dict()["results"] if not r["success"]]
        raise DataValidationError(
            f"data validation failed (suite {name!r}): "
            + "; ".join(_describe_failure(r) for r in failed),
            out,
        )
    return out
