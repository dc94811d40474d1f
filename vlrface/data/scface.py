"""SCface in its release layout (docs/datasets.md, SCface).

::

    <root>/mugshot_frontal_cropped_all/NNN_frontal.JPG                     split "mugshot"
    <root>/surveillance_cameras_distance_{1,2,3}/cam_{1..7}/NNN_camK_D.jpg  split "surveillance"
    <root>/surveillance_cameras_IR_cam8/NNN_cam8.jpg                        split "surveillance"
    <root>/surveillance_cameras_all/NNN_camK_D.jpg, NNN_cam8.jpg           (flat copy of both)
    <root>/features.txt               10 header lines, then id, dd.mm.yyyy, gender, beard,
                                      moustache, glasses (tab separated; gender 0 = m, 1 = f)
    <root>/scface_annotations.txt     landmarks (bob.db.scface), ``NNN_camK_D x y x y x y x y``

``NNN`` is the subject 001..130 (the ``identity``). A flat-folder image is read only when the
per-distance / IR folders lack it, so the two copies never count twice. ``mugshot_rotation_all``
and ``mugshot_frontal_original_all`` are not read. Only ``*.jpg`` files (any case) are read.

Columns beyond the manifest's: ``camera`` (``mugshot``, ``cam1``..``cam8``), ``distance`` (1 far
4.20 m, 2 medium 2.60 m, 3 close 1.00 m; 0 for the mugshots and the cam8 IR mugshot),
``day_night`` (``night`` for the IR cams 6, 7, 8), the ``features.txt`` fields ``birth_date``
(as written), ``gender`` (``m``/``f``), ``beard``, ``moustache``, ``glasses`` (where that file
exists), and ``landmarks4`` where the annotation file exists: 8 floats ``x, y`` of the right eye
(image left), left eye, nose tip and mouth centre. These are 4 points, not the 5-point
``landmarks`` of other readers: align them with a 4-point similarity.

Bad input: an image whose name does not fit its folder or that does not decode is a bad record
for ``ErrorPolicy`` (``on_error``); a malformed ``features.txt`` or annotation line raises
``DataError`` naming the file and line.

Protocols: ``protocol_50_80`` (subjects 1-50 fine-tune, 51-130 test) and ``protocol_all``
(all 130 subjects, no fine-tuning) give a gallery of frontal mugshots and probes per distance from
the visible cams 1-5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from vlrface.progress import tqdm

from vlrface.fileio import read_text
from vlrface.data.records import DataError, ErrorPolicy, describe_or_skip, finalize

NAME = "scface"
VISIBLE = ("cam1", "cam2", "cam3", "cam4", "cam5")
NIGHT = ("cam6", "cam7", "cam8")
DISTANCES_M = {1: 4.20, 2: 2.60, 3: 1.00}
_NAME = re.compile(r"^(\d{3})_(frontal|cam[1-7]_[1-3]|cam8)\.jpg$", re.IGNORECASE)
_DISTANCE_DIR = re.compile(r"^surveillance_cameras_distance_([1-3])$")
_CAM_DIR = re.compile(r"^cam_([1-7])$")
_FEATURES = ("birth_date", "gender", "beard", "moustache", "glasses")


def parse_name(name: str) -> tuple[str, str, int] | None:
    """``(subject, camera, distance)`` of an SCface file name, or None if it is not one."""
    match = _NAME.match(name)
    if not match:
        return None
    subject, tag = match.group(1), match.group(2).lower()
    if tag == "frontal":
        return subject, "mugshot", 0
    camera, _, distance = tag.partition("_")
    return subject, camera, int(distance or 0)


def _folders(root: Path) -> list[tuple[Path, set[tuple[str, int]]]]:
    """Image folders, structured ones first, each with the (camera, distance) it may hold."""
    folders = [(root / "mugshot_frontal_cropped_all", {("mugshot", 0)})]
    for dist_dir in sorted(p for p in root.iterdir() if _DISTANCE_DIR.match(p.name)):
        distance = int(_DISTANCE_DIR.match(dist_dir.name).group(1))
        for cam_dir in sorted(p for p in dist_dir.iterdir() if _CAM_DIR.match(p.name)):
            folders.append((cam_dir, {(f"cam{_CAM_DIR.match(cam_dir.name).group(1)}", distance)}))
    folders.append((root / "surveillance_cameras_IR_cam8", {("cam8", 0)}))
    surveillance = {(f"cam{k}", d) for k in range(1, 8) for d in (1, 2, 3)} | {("cam8", 0)}
    folders.append((root / "surveillance_cameras_all", surveillance))
    return [(folder, allowed) for folder, allowed in folders if folder.is_dir()]


def _image_rows(root: Path, policy: ErrorPolicy) -> list[dict]:
    rows: dict[str, dict] = {}  # by file stem: the flat copy repeats the structured folders
    for folder, allowed in _folders(root):
        for img in sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg"
        ):
            parsed = parse_name(img.name)
            if parsed is None or parsed[1:] not in allowed:
                policy.bad(f"{img}: not an SCface image name for folder {folder.name}")
                continue
            subject, camera, distance = parsed
            rows.setdefault(
                img.stem,
                {
                    "path": img.relative_to(root).as_posix(),
                    "identity": subject,
                    "split": "mugshot" if camera == "mugshot" else "surveillance",
                    "camera": camera,
                    "distance": distance,
                    "day_night": "night" if camera in NIGHT else "day",
                },
            )
    return list(rows.values())


def read_features(path: Path) -> dict[str, dict]:
    """``features.txt`` as ``{subject: {birth_date, gender, beard, moustache, glasses}}``."""
    features = {}
    for n, line in enumerate(read_text(path, "latin-1").splitlines()[10:], 11):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        try:
            subject = f"{int(fields[0]):03d}"
            gender = {"0": "m", "1": "f"}[fields[2]]
            flags = [bool(int(f)) for f in fields[3:6]]
        except (ValueError, KeyError, IndexError):
            flags = []
        if len(flags) != 3:
            raise DataError(
                f"{path}:{n}: expected 'id<TAB>dd.mm.yyyy<TAB>gender 0/1<TAB>beard"
                f"<TAB>moustache<TAB>glasses', got {line!r}"
            )
        features[subject] = dict(zip(_FEATURES, [fields[1], gender, *flags], strict=True))
    return features


def read_annotations(path: Path) -> dict[str, tuple[float, ...]]:
    """The landmark file as ``{file stem: (x_re, y_re, x_le, y_le, x_nose, y_nose, x_mouth,
    y_mouth)}``; blank and ``#`` lines are skipped."""
    points = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            values = tuple(float(v) for v in parts[1:])
        except ValueError:
            values = ()
        if len(values) != 8:
            raise DataError(
                f"{path}:{n}: expected '<name> x_re y_re x_le y_le x_nose y_nose "
                f"x_mouth y_mouth', got {line!r}"
            )
        if parts[0] in points:
            raise DataError(f"{path}:{n}: second annotation for {parts[0]!r}")
        points[parts[0]] = values
    return points


def _side_file(root: Path, given: str | Path | None, default: str) -> Path | None:
    """``given`` (which must exist), else ``root/default`` if it exists, else None."""
    if given:
        if not Path(given).is_file():
            raise DataError(f"{given}: file missing")
        return Path(given)
    return root / default if (root / default).is_file() else None


def read_manifest(
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    features: str | Path | None = None,
    annotations: str | Path | None = None,
) -> pd.DataFrame:
    """The manifest of an SCface root (``split`` in ``mugshot, surveillance``); ``features``
    and ``annotations`` default to ``features.txt`` / ``scface_annotations.txt`` in the root,
    and their columns are left out where the file is absent."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    policy = ErrorPolicy(on_error)
    features = _side_file(root, features, "features.txt")
    annotations = _side_file(root, annotations, "scface_annotations.txt")
    subjects = read_features(features) if features else None
    points = read_annotations(annotations) if annotations else None
    rows = []
    for row in tqdm(
        _image_rows(root, policy), desc=f"manifest {root.name}", unit="img", disable=not progress
    ):
        info = describe_or_skip(root / row["path"], policy)
        if info is None:
            continue
        if subjects is not None:
            row.update(subjects.get(row["identity"], dict.fromkeys(_FEATURES)))
        if points is not None:
            row["landmarks4"] = points.get(Path(row["path"]).stem)
        rows.append({**row, "source": NAME, **info})
    if not rows:
        raise DataError(f"{root}: no readable SCface images")
    return policy.stamp(finalize(rows))


@dataclass(frozen=True)
class Identification:
    """A closed-set SCface identification protocol: ``gallery`` holds the frontal mugshots of
    the test subjects, ``probes[d]`` their cam 1-5 images at distance ``d`` (1, 2, 3), ``train``
    the fine-tuning images (mugshots and cams 1-5 of the other subjects; empty without)."""

    train: pd.DataFrame
    gallery: pd.DataFrame
    probes: dict[int, pd.DataFrame]


def protocol_50_80(manifest: pd.DataFrame, n_train: int = 50) -> Identification:
    """Subjects ``1..n_train`` fine-tune, the rest are the test subjects (the DCR 50/80 split)."""
    return _identification(manifest, manifest["identity"].astype(int) <= n_train)


def protocol_all(manifest: pd.DataFrame) -> Identification:
    """All subjects are test subjects; no fine-tuning (all-130)."""
    return _identification(manifest, pd.Series(False, index=manifest.index))


def _identification(manifest: pd.DataFrame, is_train: pd.Series) -> Identification:
    usable = manifest["camera"].isin(("mugshot", *VISIBLE))
    test = manifest[~is_train & usable]
    gallery = test[test["camera"] == "mugshot"]
    if missing := sorted(set(test["identity"]) - set(gallery["identity"])):
        raise DataError(
            f"SCface manifest: test subject(s) {', '.join(missing[:5])} have no "
            "frontal mugshot for the gallery"
        )
    probes = {d: test[test["distance"] == d].reset_index(drop=True) for d in DISTANCES_M}
    return Identification(
        train=manifest[is_train & usable].reset_index(drop=True),
        gallery=gallery.reset_index(drop=True),
        probes=probes,
    )
