"""Training manifests of several datasets as one training set.

BinaryFaceNet fine-tunes on QMUL-TinyFace and QMUL-SurvFace "combined into a single one by
matching the identities" (BinaryFaceNet paper, Sec. 3.2.1). The rule used here:

* Every identity is namespaced by its dataset: ``<source>:<id>`` (``tinyface:17``,
  ``survface:17``), so equal raw ids of different datasets stay two classes. Nothing merges
  by accident.
* Identities known to be the same person merge only through an explicit mapping file, a CSV with
  the header ``source,identity,global_identity``: each row relabels ``<source>:<identity>`` as
  ``global_identity``, and all identities given the same ``global_identity`` are one class (a new
  label, or an existing namespaced identity to merge into).
* A mapping row naming an identity the manifests do not hold, mapping one identity twice, or
  with an empty ``global_identity`` raises ``DataError`` naming the file and line.

Rows keep their ``source`` and their ``path`` relative to that dataset's root (``(source,
path)`` locates an image), and gain ``raw_identity``, the dataset's own id. Rows without an
identity (distractors, unmated probes) cannot be training rows and raise ``DataError``. The
skipped-record counts of the inputs (``ErrorPolicy.stamp``) add up.
"""

from __future__ import annotations

import io
import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vlrface.fileio import read_text
from vlrface.data.records import DataError

MAPPING_HEADER = ["source", "identity", "global_identity"]


def read_mapping(path: Path, known: set[str]) -> dict[str, str]:
    """The mapping CSV as ``{"<source>:<identity>": global_identity}``, checked against the
    namespaced identities ``known``."""
    if not path.is_file():
        raise DataError(f"{path}: identity mapping file missing")
    mapping: dict[str, str] = {}
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != MAPPING_HEADER:
            raise DataError(
                f"{path}: expected the header {','.join(MAPPING_HEADER)}, got {reader.fieldnames}"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            key = f"{(row['source'] or '').strip()}:{(row['identity'] or '').strip()}"
            target = (row["global_identity"] or "").strip()
            if key not in known:
                raise DataError(f"{where}: unknown identity {key!r} (not in the manifests)")
            if key in mapping:
                raise DataError(f"{where}: identity {key!r} is mapped twice")
            if not target:
                raise DataError(f"{where}: empty global_identity for {key!r}")
            mapping[key] = target
    return mapping


def combine_identities(
    manifests: Sequence[pd.DataFrame], mapping: str | Path | None = None
) -> pd.DataFrame:
    """One manifest of the training ``manifests``, identities namespaced ``<source>:<id>`` and
    merged only as ``mapping`` says; see the module docstring for the rule."""
    seen: set[str] = set()
    frames = []
    for df in manifests:
        sources = set(df["source"])
        if twice := sources & seen:
            raise DataError(f"source(s) {sorted(twice)} given in more than one manifest")
        seen |= sources
        unlabelled = df.loc[df["identity"] == "", "source"]
        if len(unlabelled):
            raise DataError(
                f"{unlabelled.iloc[0]}: {len(unlabelled)} row(s) without an identity "
                "(distractors or unmated probes) in a training set"
            )
        frames.append(
            df.assign(raw_identity=df["identity"], identity=df["source"] + ":" + df["identity"])
        )
    combined = pd.concat(frames, ignore_index=True)
    if mapping is not None:
        combined["identity"] = combined["identity"].replace(
            read_mapping(Path(mapping), set(combined["identity"]))
        )
    combined = combined.sort_values(["source", "path"], ignore_index=True)
    combined.attrs["skipped"] = sum(df.attrs.get("skipped", 0) for df in manifests)
    combined.attrs["skipped_examples"] = [
        m for df in manifests for m in df.attrs.get("skipped_examples", [])
    ][:10]
    return combined
