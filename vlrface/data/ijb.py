"""IJB-B and IJB-C: the insightface pack and the raw NIST protocol CSVs (docs/datasets.md, IJB).

(a) insightface pack (``p`` = ``ijbb`` or ``ijbc``)::

    <root>/loose_crop/<k>.jpg
    <root>/meta/<p>_face_tid_mid.txt         "<img> <template_id> <media_id>"
    <root>/meta/<p>_name_5pts_score.txt      "<img> x1 y1 ... x5 y5 <faceness>" (loose-crop px)
    <root>/meta/<p>_template_pair_label.txt  "<template_a> <template_b> <label 0/1>"
    <root>/meta/ijbc_1N_gallery_G1.csv, ..._G2.csv, ijbc_1N_probe_mixed.csv
    <root>/meta/ijbb_1N_gallery_S1.csv, ..._S2.csv, ijbb_1N_probe_mixed.csv

(b) NIST release: IJB-B ``<root>/protocol/ijbb_1N_gallery_S{1,2}.csv``,
``ijbb_1N_probe_mixed.csv``, ``ijbb_11_S1_S2_matches.csv``; IJB-C ``<root>/protocols/``
``ijbc_1N_gallery_G{1,2}.csv``, ``ijbc_1N_probe_mixed.csv``, ``ijbc_11_G1_G2_matches.csv`` and
``ijbc_metadata.csv``. Template CSVs have ``TEMPLATE_ID, SUBJECT_ID``, the image as ``FILE``
(IJB-B, IJB-C v1) or ``FILENAME`` (v2.0), ``SIGHTING_ID`` and ``FACE_X/Y/WIDTH/HEIGHT``; the
match lists are ``template_a, template_b`` rows whose label is subject equality.

``read_manifest`` gives one row per face in a template (an image in two templates is two rows):
``path``, ``template_id``, ``media_id``, ``identity`` (the subject where a 1:N CSV names the
template, else ""), and ``landmarks`` + ``faceness`` (pack) or ``bbox`` (NIST). A media is
``(template_id, media_id)``; for NIST ``media_id`` is the ``SIGHTING_ID``. ``split`` is always
``"test"``: IJB is evaluation-only and its protocols are the tables of ``read_protocols``:
``pairs`` (template_a, template_b, label), ``galleries`` (``G1``/``G2`` or ``S1``/``S2``) and
``probes`` (template_id, subject_id; a template's subject is its first row's).

Bad input: a pack image listed in meta but missing, a NIST image missing, or one that does not
decode, is a bad record for ``ErrorPolicy``; a meta line with the wrong number of fields, a CSV
row without its columns and a pair naming a template no face belongs to raise ``DataError``
naming the file and line.
"""

from __future__ import annotations

import io
import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from vlrface.progress import tqdm

from vlrface.fileio import read_text
from vlrface.data.records import DataError, ErrorPolicy, describe_image, finalize, inside_root

GALLERIES = {"ijbb": ("S1", "S2"), "ijbc": ("G1", "G2")}
NIST_DIRS = {"ijbb": "protocol", "ijbc": "protocols"}


@dataclass(frozen=True)
class Protocols:
    pairs: pd.DataFrame  # template_a, template_b, label (1 = same subject)
    galleries: dict[str, pd.DataFrame]  # name -> template_id, subject_id
    probes: pd.DataFrame  # template_id, subject_id


def locate(root: Path) -> tuple[str, str]:
    """``(dataset, layout)``: ``ijbb``/``ijbc`` and ``pack``/``nist``, or ``DataError``."""
    for dataset in GALLERIES:
        if (root / "meta" / f"{dataset}_face_tid_mid.txt").is_file():
            return dataset, "pack"
        if (root / NIST_DIRS[dataset] / f"{dataset}_1N_probe_mixed.csv").is_file():
            return dataset, "nist"
    raise DataError(
        f"{root}: neither an IJB pack (meta/ijb?_face_tid_mid.txt) nor a NIST release "
        "(protocol/ijbb_1N_probe_mixed.csv, protocols/ijbc_1N_probe_mixed.csv)"
    )


def read_fields(path: Path, count: int) -> list[tuple[int, list[str]]]:
    """A space-separated meta file as ``(line, fields)``; exactly ``count`` fields a line."""
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != count:
            raise DataError(f"{path}:{n}: expected {count} fields, got {len(fields)}: {line!r}")
        rows.append((n, fields))
    return rows


def read_csv_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """A protocol CSV with a header as ``(line, row)``; each row must fill ``columns``, where
    ``FILE`` also accepts ``FILENAME``."""
    rows = []
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        if "FILE" not in (reader.fieldnames or []) and "FILENAME" in (reader.fieldnames or []):
            reader.fieldnames = ["FILE" if c == "FILENAME" else c for c in reader.fieldnames]
        for row in reader:
            if any(not (row.get(c) or "").strip() for c in columns):
                raise DataError(f"{path}:{reader.line_num}: row lacks one of {', '.join(columns)}")
            rows.append((reader.line_num, row))
    return rows


def _subjects(path: Path) -> pd.DataFrame:
    """``template_id, subject_id`` of a 1:N CSV, one row per template (its first subject)."""
    rows = []
    for n, r in read_csv_rows(path, ("TEMPLATE_ID", "SUBJECT_ID")):
        try:
            rows.append((int(r["TEMPLATE_ID"]), str(int(r["SUBJECT_ID"]))))
        except ValueError as exc:
            raise DataError(f"{path}:{n}: TEMPLATE_ID and SUBJECT_ID must be integers") from exc
    df = pd.DataFrame(rows, columns=["template_id", "subject_id"])
    return df.drop_duplicates("template_id", ignore_index=True)


def _one_n_files(root: Path, dataset: str, layout: str) -> dict[str, Path]:
    folder = root / ("meta" if layout == "pack" else NIST_DIRS[dataset])
    names = {g: f"{dataset}_1N_gallery_{g}.csv" for g in GALLERIES[dataset]}
    names["probe"] = f"{dataset}_1N_probe_mixed.csv"
    return {k: folder / v for k, v in names.items() if (folder / v).is_file()}


def _template_subjects(root: Path, dataset: str, layout: str) -> dict[int, str]:
    """``{template_id: subject}`` from the 1:N CSVs (and NIST's ``<p>_metadata.csv``)."""
    files = list(_one_n_files(root, dataset, layout).values())
    metadata = root / NIST_DIRS[dataset] / f"{dataset}_metadata.csv"
    if layout == "nist" and metadata.is_file():
        files.append(metadata)
    tables = [_subjects(p) for p in files]
    if not tables:
        return {}
    df = pd.concat(tables).drop_duplicates("template_id")
    return dict(zip(df["template_id"], df["subject_id"], strict=True))


def _pack_faces(root: Path, dataset: str, policy: ErrorPolicy) -> list[dict]:
    meta = root / "meta"
    tid_mid = meta / f"{dataset}_face_tid_mid.txt"
    points_path = meta / f"{dataset}_name_5pts_score.txt"
    points = {f[0]: f[1:] for _, f in read_fields(points_path, 12)} if points_path.is_file() else {}
    rows = []
    for n, (img, tid, mid) in read_fields(tid_mid, 3):
        path = inside_root(root, f"loose_crop/{img}", f"{tid_mid}:{n}")
        if not path.is_file():
            policy.bad(f"{tid_mid}:{n}: image loose_crop/{img} listed in meta is missing")
            continue
        try:
            row = {"path": f"loose_crop/{img}", "template_id": int(tid), "media_id": int(mid)}
            if points_path.is_file():
                values = [float(v) for v in points.get(img, [])] or [float("nan")] * 11
                row.update(landmarks=tuple(values[:10]), faceness=values[10])
        except ValueError as exc:
            raise DataError(
                f"{tid_mid}:{n}: bad number for {img!r} here or in {points_path.name} ({exc})"
            ) from exc
        rows.append(row)
    return rows


def _nist_faces(root: Path, dataset: str, policy: ErrorPolicy) -> list[dict]:
    folder = root / NIST_DIRS[dataset]
    files = list(_one_n_files(root, dataset, "nist").values())
    if (folder / f"{dataset}_metadata.csv").is_file():
        files.append(folder / f"{dataset}_metadata.csv")
    columns = (
        "TEMPLATE_ID",
        "FILE",
        "SIGHTING_ID",
        "FACE_X",
        "FACE_Y",
        "FACE_WIDTH",
        "FACE_HEIGHT",
    )
    rows: dict[tuple, dict] = {}
    for path in files:
        for n, r in read_csv_rows(path, columns):
            try:
                bbox = tuple(float(r[c]) for c in columns[3:])
                key = (r["FILE"], int(r["TEMPLATE_ID"]), int(r["SIGHTING_ID"]), bbox)
            except ValueError as exc:
                raise DataError(f"{path}:{n}: bad number ({exc})") from exc
            if key in rows:
                continue
            if not inside_root(root, r["FILE"], f"{path}:{n}").is_file():
                policy.bad(f"{path}:{n}: image {r['FILE']} does not exist")
                continue
            rows[key] = {"path": key[0], "template_id": key[1], "media_id": key[2], "bbox": bbox}
    return list(rows.values())


def read_manifest(
    root: str | Path, *, on_error: str = "raise", progress: bool = True
) -> pd.DataFrame:
    """The face manifest of an IJB-B/C pack or NIST release (``split`` is ``test``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    dataset, layout = locate(root)
    policy = ErrorPolicy(on_error)
    faces = (_pack_faces if layout == "pack" else _nist_faces)(root, dataset, policy)
    subjects = _template_subjects(root, dataset, layout)
    rows, described = [], {}
    for face in tqdm(faces, desc=f"manifest {dataset}", unit="face", disable=not progress):
        if face["path"] not in described:
            described[face["path"]] = describe_image(root / face["path"])
        info = described[face["path"]]
        if not info["decodable"]:
            policy.bad(f"{root / face['path']}: image does not decode")
            continue
        identity = subjects.get(face["template_id"], "")
        rows.append({**face, "identity": identity, "split": "test", "source": dataset, **info})
    if not rows:
        raise DataError(f"{root}: no readable {dataset} faces")
    return policy.stamp(finalize(rows))


def _pack_templates(root: Path, dataset: str) -> set[int]:
    path = root / "meta" / f"{dataset}_face_tid_mid.txt"
    return {int(f[1]) for _, f in read_fields(path, 3)}


def _pairs(root: Path, dataset: str, layout: str, subjects: dict[int, str]) -> pd.DataFrame:
    if layout == "pack":
        path = root / "meta" / f"{dataset}_template_pair_label.txt"
        rows = [(n, *f) for n, f in read_fields(path, 3)] if path.is_file() else []
    else:
        g1, g2 = ("S1", "S2") if dataset == "ijbb" else ("G1", "G2")
        path = root / NIST_DIRS[dataset] / f"{dataset}_11_{g1}_{g2}_matches.csv"
        lines = read_text(path).splitlines() if path.is_file() else []
        rows = [
            (n, *line.replace(",", " ").split())
            for n, line in enumerate(lines, 1)
            if line.strip() and line.split(",")[0].strip().isdigit()  # skip a header line
        ]
    known = set(subjects) if layout == "nist" else _pack_templates(root, dataset)
    pairs = []
    for n, a, b, *label in rows:
        try:
            a, b = int(a), int(b)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: template ids must be integers") from exc
        for t in (a, b):
            if t not in known:
                raise DataError(f"{path}:{n}: template {t} is not a known template")
        same = int(label[0]) if label else int(subjects[a] == subjects[b])
        pairs.append((a, b, same))
    return pd.DataFrame(pairs, columns=["template_a", "template_b", "label"])


def read_protocols(root: str | Path) -> Protocols:
    """The 1:1 pairs and 1:N gallery/probe tables of an IJB-B/C pack or NIST release."""
    root = Path(root)
    dataset, layout = locate(root)
    files = _one_n_files(root, dataset, layout)
    subjects = _template_subjects(root, dataset, layout)
    empty = pd.DataFrame(
        {"template_id": pd.Series(dtype="int64"), "subject_id": pd.Series(dtype="object")}
    )
    return Protocols(
        pairs=_pairs(root, dataset, layout, subjects),
        galleries={g: _subjects(files[g]) for g in GALLERIES[dataset] if g in files},
        probes=_subjects(files["probe"]) if "probe" in files else empty,
    )
