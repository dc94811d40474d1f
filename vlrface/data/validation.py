"""Great Expectations (1.x) suites over manifests; a failed suite stops the pipeline.

GX is called directly, not through ZenML's GX integration (which pins GX < 1). Facts that span
rows (images per identity, per-split counts, landmark geometry, pair membership) are computed
first with pandas, so every rule is a plain expectation over a table whose failures name rows
(by ``path``, split or pair).

* ``validate_manifest``: the demo pipeline's suite (aligned 112x112 faces, identity-disjoint
  train/test split).
* ``validate_dataset``: the suite of a registered dataset (``vlrface.data.datasets``): layout
  and schema, images decodable, resolution distribution, landmark sanity, counts against the
  official sizes and, for sets with 1:1 pairs, the pairs against the manifest.
* ``check_disjoint``: identities shared by training and evaluation sets of one run.

Expectations with ``severity="warning"`` are reported, never fatal: a set smaller than its
release (a subset, a fixture), and overlaps accepted in the literature (LFW identities inside
CASIA-WebFace). Everything else fails with ``DataValidationError`` naming the expectation and up
to three offending rows. With ``docs_dir``, GX's data docs (HTML) are rendered there, for a step
to log to MLflow as an artifact.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from vlrface.data import datasets
from vlrface.data.records import MANIFEST_COLUMNS, DataError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
logging.getLogger("great_expectations").setLevel(logging.WARNING)
log = logging.getLogger(__name__)

# (training set, evaluation set) overlaps known and accepted in the literature: warn, not fail
ACCEPTED_OVERLAPS = {("casia_webface", "lfw"), ("casia_webface_pack", "lfw")}


class DataValidationError(DataError):
    """A suite failed; the message names the failing expectations and offending rows."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


class _Run:
    """One GX context; each ``check`` validates one table with its own suite.

    With ``docs_dir`` the context is a file context in a temp folder (data docs need one) and
    its local site is copied to ``docs_dir`` by ``close``; otherwise it is ephemeral.
    """

    def __init__(self, docs_dir: str | Path | None = None):
        import great_expectations as gx

        self.gx, self.docs_dir, self.tmp = gx, docs_dir, None
        if docs_dir is None:
            self.ctx = gx.get_context(mode="ephemeral")
        else:
            self.tmp = tempfile.mkdtemp(prefix="vlrface-gx-")
            self.ctx = gx.get_context(mode="file", project_root_dir=self.tmp)
        self.ctx.variables.progress_bars = {"globally": False}
        self.source = self.ctx.data_sources.add_pandas("manifests")
        self.results: dict[str, dict] = {}
        self.failures: list[str] = []
        self.warnings: list[str] = []
        # warnings said once, as information, in ``notes`` instead (the report keeps them all)
        self.explained: dict[str, str] = {}

    def check(self, name: str, frame: pd.DataFrame, expectations: list, index: list[str]):
        gx = self.gx
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        vd = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        result_format = {
            "result_format": "COMPLETE",
            "unexpected_index_column_names": index,
            "partial_unexpected_count": 3,
        }
        frame = frame.reset_index(drop=True)
        if self.docs_dir is None:
            result = vd.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        else:
            checkpoint = self.ctx.checkpoints.add(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[vd],
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                    result_format=result_format,
                )
            )
            run = checkpoint.run(batch_parameters={"dataframe": frame})
            result = next(iter(run.run_results.values()))
        self.results[name] = result.describe_dict()
        for r in result.to_json_dict()["results"]:
            if not r["success"]:
                line = f"{name}: {_describe_failure(r, index)}"
                critical = r["expectation_config"].get("severity", "critical") == "critical"
                (self.failures if critical else self.warnings).append(line)

    def close(self, what: str) -> dict:
        docs = None
        if self.docs_dir is not None:
            site = Path(self.tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
            shutil.copytree(site, self.docs_dir, dirs_exist_ok=True)
            shutil.rmtree(self.tmp, ignore_errors=True)
            docs = str(Path(self.docs_dir) / "index.html")
        for line in self.warnings:
            if not any(line.startswith(f"{name}: ") for name in self.explained):
                log.warning("data validation warning: %s", line)
        for note in self.explained.values():
            log.info("%s", note)
        report = {
            "success": not self.failures,
            "failures": self.failures,
            "warnings": self.warnings,
            "results": self.results,
            "data_docs": docs,
        }
        if self.failures:
            raise DataValidationError(
                f"data validation failed ({what}): " + "; ".join(self.failures), report
            )
        return report


def _describe_failure(r: dict, index: list[str]) -> str:
    cfg = r["expectation_config"]
    kw = cfg["kwargs"]
    col = kw.get("column") or ",".join(v for k, v in kw.items() if k.startswith("column_"))
    res = r.get("result", {})
    rows = res.get("unexpected_index_list") or []
    named = [
        "/".join(str(row[c]) for c in index if c in row)
        for row in rows[:3]
        if isinstance(row, dict)
    ]
    count = res.get("unexpected_count")
    if count is None:
        fail = f"observed {res.get('observed_value')!r}"
    else:
        fail = f"{count} row(s) fail" + (f"; e.g. {', '.join(named)}" if named else "")
    return f"{cfg['type']}({col}): {fail}"


# -- the demo pipeline's suite -------------------------------------------------------------


def _demo_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    df = manifest.copy()
    df["identity_images"] = df.groupby("identity")["path"].transform("count")
    df["identity_splits"] = df.groupby("identity")["split"].transform("nunique")
    return df


def face_manifest_suite(image_size: int, min_images: int = 2) -> list:
    """The expectations every aligned training manifest (the demo pipeline's) must meet."""
    import great_expectations as gx

    E = gx.expectations
    return [
        E.ExpectColumnValuesToNotBeNull(column="path"),
        E.ExpectColumnValuesToBeUnique(column="path"),
        E.ExpectColumnValuesToNotBeNull(column="identity"),
        E.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="width", min_value=image_size, max_value=image_size),
        E.ExpectColumnValuesToBeBetween(
            column="height", min_value=image_size, max_value=image_size
        ),
        E.ExpectColumnValuesToBeInSet(column="channels", value_set=[3]),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"]),
        E.ExpectColumnValuesToBeBetween(column="identity_images", min_value=min_images),
        # an identity on both sides of the split would leak test faces into training
        E.ExpectColumnValuesToBeInSet(column="identity_splits", value_set=[1]),
    ]


def validate_manifest(
    manifest: pd.DataFrame,
    name: str,
    image_size: int,
    min_images: int = 2,
    docs_dir: str | Path | None = None,
) -> dict:
    """Run the demo suite; return GX's result as a dict, or raise ``DataValidationError``."""
    run = _Run(docs_dir)
    run.check(name, _demo_frame(manifest), face_manifest_suite(image_size, min_images), ["path"])
    try:
        run.close(f"suite {name!r}")
    except DataValidationError as exc:
        raise DataValidationError(str(exc), run.results[name]) from None
    return run.results[name]


# -- registered datasets ---------------------------------------------------------------------


def landmark_facts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per row with landmarks (``landmarks``: 5 points ``x1, y1, ..., x5, y5``, or SCface's
    ``landmarks4``: eyes, nose, mouth centre): all points inside the image, eyes above the mouth,
    inter-ocular distance; null where a row has none (or NaNs). Points 1-2 are the eyes, the last
    one (4) or two (5) the mouth."""
    column, n = ("landmarks", 5) if "landmarks" in manifest else ("landmarks4", 4)
    has = (
        manifest[column]
        .map(lambda v: v is not None and np.size(v) == 2 * n and bool(np.isfinite(v).all()))
        .to_numpy()
    )
    facts = pd.DataFrame(
        {"lm_inside": None, "lm_eyes_above_mouth": None, "lm_interocular": np.nan},
        index=manifest.index,
    ).astype({"lm_inside": object, "lm_eyes_above_mouth": object})
    if has.any():
        pts = np.stack(manifest[column][has].map(np.asarray)).astype(np.float64).reshape(-1, n, 2)
        size = manifest[["width", "height"]][has].to_numpy()[:, None, :]
        mouth_top = pts[:, 3:, 1].min(axis=1)
        # python bools: GX's file store cannot serialise numpy's in failure reports
        facts.loc[has, "lm_inside"] = ((pts >= 0) & (pts <= size)).all(axis=(1, 2)).tolist()
        facts.loc[has, "lm_eyes_above_mouth"] = (pts[:, :2, 1].max(axis=1) < mouth_top).tolist()
        facts.loc[has, "lm_interocular"] = np.linalg.norm(pts[:, 0] - pts[:, 1], axis=1)
    return facts


def dataset_suite(spec: datasets.Dataset, columns: list[str]) -> list:
    """Layout, decodability, resolution and landmark expectations of ``spec``."""
    import great_expectations as gx

    E = gx.expectations
    exps = [
        E.ExpectColumnValuesToNotBeNull(column="path"),
        E.ExpectColumnValuesToMatchRegex(column="path", regex=spec.path_pattern),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(spec.splits)),
        E.ExpectColumnValuesToBeInSet(column="source", value_set=[spec.name]),
        E.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="channels", value_set=[1, 3]),
    ]
    if spec.unique == ("path",):
        exps.append(E.ExpectColumnValuesToBeUnique(column="path"))
    else:
        exps.append(E.ExpectCompoundColumnsToBeUnique(column_list=list(spec.unique)))
    res = spec.resolution
    if res.exact is not None:
        exps += [
            E.ExpectColumnValuesToBeBetween(column=c, min_value=res.exact, max_value=res.exact)
            for c in ("width", "height")
        ]
    if res.mean_below is not None:  # native low resolution: faces average under ... px
        exps.append(E.ExpectColumnMeanToBeBetween(column="face_px", max_value=res.mean_below))
    if res.min_side is not None:
        exps.append(E.ExpectColumnValuesToBeBetween(column="min_side", min_value=res.min_side))
    if "lm_inside" in columns:
        exps += [
            E.ExpectColumnValuesToBeInSet(column="lm_inside", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="lm_eyes_above_mouth", value_set=[True]),
            E.ExpectColumnValuesToBeBetween(column="lm_interocular", min_value=0, strict_min=True),
        ]
    return exps


def schema_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per required column: its expected and actual dtype (``missing``; ``object`` columns must
    hold only ``str`` values, else ``object (not all str)``)."""
    rows = []
    for column, dtype in MANIFEST_COLUMNS.items():
        if column not in manifest:
            actual = "missing"
        else:
            actual = str(manifest[column].dtype)
            if actual == "object" and not manifest[column].map(type).eq(str).all():
                actual = "object (not all str)"
        rows.append((column, dtype, actual))
    return pd.DataFrame(rows, columns=["column", "expected", "actual"])


def schema_suite() -> list:
    import great_expectations as gx

    return [gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="actual", column_B="expected")]


def count_table(spec: datasets.Dataset, manifest: pd.DataFrame, pairs: pd.DataFrame | None):
    """Observed vs official images / identities per split (and pairs per polarity)."""
    rows = []
    for split, size in spec.sizes.items():
        part = manifest if split == datasets.ALL else manifest[manifest["split"] == split]
        known = part["identity"][part["identity"] != ""]
        rows.append((split, part["path"].nunique(), known.nunique(), size.images, size.identities))
    if pairs is not None:
        for same, official in spec.pairs.items():
            name = "pairs:same" if same else "pairs:different"
            rows.append((name, int((pairs["same"] == same).sum()), None, official, None))
    table = pd.DataFrame(
        rows, columns=["split", "images", "identities", "official_images", "official_identities"]
    )
    return table.astype({c: "float64" for c in table.columns if c != "split"})


def subset_note(dataset: str, counts: pd.DataFrame) -> str | None:
    """One line for a set smaller than its release (what ``count_suite``'s warnings mean):
    expected for the demo set, a fixture or a partial download, so said as information."""
    parts = []
    for row in counts.itertuples():
        for what in ("images", "identities"):
            have, official = getattr(row, what), getattr(row, f"official_{what}")
            if pd.notna(have) and pd.notna(official) and have < official:
                parts.append(f"{row.split} {int(have)} of {int(official)} {what}")
    if not parts:
        return None
    return (
        f"{dataset}: a subset of the release ({', '.join(parts)}): fine for the demo set, a "
        "fixture or a partial download; kept as validation warnings in the data docs"
    )


def count_suite() -> list:
    import great_expectations as gx

    E = gx.expectations
    exps = []
    for what in ("images", "identities"):
        pair = {"column_A": f"official_{what}", "column_B": what}
        exps.append(  # more than the release: a superset, or a mislabelled folder
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                **pair, or_equal=True, ignore_row_if="either_value_is_missing"
            )
        )
        exps.append(  # fewer: a subset (partial download, fixture): warn only
            E.ExpectColumnPairValuesToBeEqual(
                **pair, ignore_row_if="either_value_is_missing", severity="warning"
            )
        )
    return exps


def pair_table(manifest: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair: both images in the manifest, and ``same`` agreeing with their identities."""
    ident = dict(zip(manifest["path"], manifest["identity"], strict=True))
    a, b = pairs["path_a"].map(ident), pairs["path_b"].map(ident)
    known = a.notna() & b.notna() & (a != "") & (b != "")
    agree = ((a == b) == pairs["same"].astype(bool)).where(known)
    return pd.DataFrame(
        {
            "path_a": pairs["path_a"],
            "path_b": pairs["path_b"],
            "a_listed": a.notna(),
            "b_listed": b.notna(),
            "same_matches_identities": agree.astype(object).where(known, None),
        }
    )


def pair_suite() -> list:
    import great_expectations as gx

    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
        for c in ("a_listed", "b_listed", "same_matches_identities")
    ]


def validate_dataset(
    manifest: pd.DataFrame,
    dataset: str,
    *,
    pairs: pd.DataFrame | None = None,
    docs_dir: str | Path | None = None,
) -> dict:
    """Run ``dataset``'s suites on its manifest (and its 1:1 ``pairs``, if given: ``path_a,
    path_b, same``); return the report (``failures`` empty, ``warnings``, GX ``results``,
    ``data_docs``) or raise ``DataValidationError``."""
    spec = datasets.get(dataset)
    frame = manifest.copy()
    if {"width", "height"} <= set(frame):
        frame["face_px"] = frame[["width", "height"]].max(axis=1)
        frame["min_side"] = frame[["width", "height"]].min(axis=1)
    if {"landmarks", "landmarks4"} & set(frame):
        frame = frame.join(landmark_facts(frame))
    run = _Run(docs_dir)
    run.check(f"{dataset}.schema", schema_table(frame), schema_suite(), ["column"])
    if run.failures:  # the other suites need the columns
        return run.close(f"dataset {dataset}")
    run.check(f"{dataset}.manifest", frame, dataset_suite(spec, list(frame)), ["path"])
    counts = count_table(spec, frame, pairs)
    run.check(f"{dataset}.counts", counts, count_suite(), ["split"])
    if note := subset_note(dataset, counts):
        run.explained[f"{dataset}.counts"] = note
    if pairs is not None:
        run.check(f"{dataset}.pairs", pair_table(frame, pairs), pair_suite(), ["path_a", "path_b"])
    # skipped records: stamped by the reader, or kept in a loaded Parquet's provenance
    prov = manifest.attrs.get("provenance", {})
    skipped = int(manifest.attrs.get("skipped", prov.get("skipped", 0)))
    if skipped:
        run.warnings.append(f"{dataset}: the reader skipped {skipped} bad record(s)")
    report = run.close(f"dataset {dataset}")
    report["counts"] = counts.astype(object).where(counts.notna(), None).to_dict("records")
    return report


# -- identity disjointness across the sets of one run ----------------------------------------


def _name_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _keys(label: str, df: pd.DataFrame) -> pd.DataFrame:
    """The identities of one set: ``(source, raw id)`` and a normalised person name."""
    spec = datasets.DATASETS.get(label)
    raw = df["raw_identity"] if "raw_identity" in df else df["identity"]
    if "name" in df:
        names = df["name"].fillna("").astype(str)
    elif spec is not None and spec.identity_is_name:
        names = df["identity"]
    else:
        names = pd.Series("", index=df.index)
    keys = pd.DataFrame(
        {"source": df["source"], "raw": raw.astype(str), "name": names.map(_name_key)}
    )
    return keys[keys["raw"] != ""].drop_duplicates()


def overlap_table(train: Mapping[str, pd.DataFrame], evaluation: Mapping[str, pd.DataFrame]):
    """One row per identity found in a training and an evaluation set: matched by the same
    ``(source, id)`` within a dataset, or by the same person ``name`` across datasets."""
    rows = []
    for t_label, t_df in train.items():
        t = _keys(t_label, t_df)
        for e_label, e_df in evaluation.items():
            e = _keys(e_label, e_df)
            same = t.merge(e, on=["source", "raw"])
            named = t[t["name"] != ""].merge(e[e["name"] != ""], on="name")
            named = named[named["source_x"] != named["source_y"]]
            keys = [f"{s}:{r}" for s, r in zip(same["source"], same["raw"], strict=True)]
            keys += sorted(set(f"name:{n}" for n in named["name"]))
            accepted = (t_label, e_label) in ACCEPTED_OVERLAPS
            rows += [(t_label, e_label, k, accepted) for k in keys]
    return pd.DataFrame(rows, columns=["train_set", "eval_set", "identity", "accepted"])


def check_disjoint(
    train: Mapping[str, pd.DataFrame],
    evaluation: Mapping[str, pd.DataFrame],
    docs_dir: str | Path | None = None,
) -> dict:
    """Fail if an identity of a training set is in an evaluation set of the same run.

    Keys are registered dataset names where they apply (``lfw``'s identities are names); an
    overlap in ``ACCEPTED_OVERLAPS`` (LFW people in CASIA-WebFace) is a warning with its count.
    The report's ``overlaps`` counts identities per ``train_set -> eval_set``.
    """
    import great_expectations as gx

    table = overlap_table(train, evaluation)
    run = _Run(docs_dir)
    expectation = gx.expectations.ExpectColumnValuesToBeInSet(column="accepted", value_set=[True])
    run.check("identity_disjointness", table, [expectation], ["train_set", "eval_set", "identity"])
    counts = table.groupby(["train_set", "eval_set", "accepted"]).size()
    for (t, e, accepted), n in counts.items():
        if accepted:
            run.warnings.append(f"{n} identities of {e} are in {t} (known, accepted overlap)")
    report = run.close("identity disjointness")
    report["overlaps"] = {f"{t}->{e}": int(n) for (t, e, _), n in counts.items()}
    return report


def split_by_role(dataset: str, manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(training rows, evaluation rows)`` of one manifest, by the dataset's ``train_splits``."""
    spec = datasets.get(dataset)
    trains = manifest["split"].isin(spec.train_splits)
    return manifest[trains], manifest[~trains]
