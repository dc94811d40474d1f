"""The training rows a pipeline run reads: one release, or several combined, or a protocol's
training subjects.

* One release (``data.layout`` at ``data.root``): the rows of its training splits
  (``validation.split_by_role``).
* SCface (``layout: scface``): the release has no training split; protocol 50/80 fine-tunes on
  subjects ``1..data.subjects`` (``scface.protocol_50_80``: their mugshots and visible-light
  surveillance images), and the other subjects are the protocol's test subjects.
* Several releases (``data.datasets``: ``[{layout, root}, ...]``, each ``root`` relative to
  ``data.root``): each one's training rows, combined by ``combine.combine_identities``
  (identities namespaced ``<layout>:<id>``, merged only through ``data.identity_mapping``), with
  paths rewritten relative to ``data.root`` so that every step reads every image from that one
  root. BinaryFaceNet's TinyFace + SurvFace fine-tune is ``datasets: [{layout: tinyface, root:
  tinyface}, {layout: survface, root: survface}]`` under ``root: data``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlrface.data.manifest import build_manifest
from vlrface.data.records import DataError
from vlrface.data.validation import split_by_role


def _training_rows(layout: str, root: Path, subjects: int | None, on_error: str) -> pd.DataFrame:
    release = build_manifest(layout, root, on_error=on_error)
    if layout == "scface":
        from vlrface.data.scface import protocol_50_80

        if subjects is None:
            raise DataError(
                f"{root}: SCface has no training split; set data.subjects (50 for protocol "
                "50/80: subjects 1-50 fine-tune, the rest are test subjects)"
            )
        rows = protocol_50_80(release, subjects).train
    else:
        if subjects is not None:
            raise DataError(f"data.subjects applies to SCface only, not {layout}")
        rows = split_by_role(layout, release)[0]
    rows = rows.reset_index(drop=True)
    rows.attrs = release.attrs
    if rows.empty:
        raise DataError(f"{root}: the {layout} release holds no training rows")
    return rows


def training_rows(cfg) -> pd.DataFrame:
    """The training rows of a ``vlrface.config.common.DataConfig``; ``attrs`` carry the provenance
    (``{"datasets": [...]}`` when combined) and the skipped-record counts."""
    root = Path(cfg.root)
    if not cfg.datasets:
        return _training_rows(cfg.layout, root, cfg.subjects, cfg.on_error)
    from vlrface.data.combine import combine_identities

    parts = []
    for entry in cfg.datasets:
        rows = _training_rows(entry.layout, root / entry.root, cfg.subjects, cfg.on_error)
        prefix = Path(entry.root).as_posix().strip("/")
        rows = rows.assign(source=entry.layout, path=prefix + "/" + rows["path"])
        rows.attrs = {**rows.attrs}
        parts.append(rows)
    combined = combine_identities(parts, cfg.identity_mapping)
    combined.attrs["provenance"] = {
        "datasets": [p.attrs["provenance"] for p in parts],
        "identity_mapping": cfg.identity_mapping,
    }
    return combined
