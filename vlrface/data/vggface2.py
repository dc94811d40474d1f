"""VGGFace2 in its release layout (docs/datasets.md, VGGFace2).

::

    <root>/train/n<6 digits>/<imageID>_<faceID>.jpg    split "train"  (train/n000002/0001_01.jpg)
    <root>/test/n<6 digits>/<imageID>_<faceID>.jpg     split "test"
    <root>/train_list.txt, test_list.txt   one ``n000002/0001_01.jpg`` per line (the README calls
                                           them meta/train.txt, meta/test.txt: both are read)
    <root>/meta/identity_meta.csv          ``Class_ID, Name, Sample_Num, Flag, Gender``
    <root>/bb_landmark/loose_bb_{train,test}.csv        ``"NAME_ID",X,Y,W,H``
    <root>/bb_landmark/loose_landmark_{train,test}.csv  ``"NAME_ID",P1X,P1Y,...,P5X,P5Y``
    <root>/test_posetemp_imglist.txt (or under meta/)   optional pose templates

A split's list, where present, says which images the split holds (an entry without its file is a
bad record); without it the split folder is walked. ``identity`` is the class id (``n000002``);
``name`` and ``gender`` (``m``/``f``) come from ``identity_meta.csv``, whose quirks are handled:
spaces after commas, quoted names, and names with an unquoted comma (the fields between the
first comma and the last three are re-joined). ``bbox`` (``x, y, w, h``) and ``landmarks`` (the 5
MTCNN points, ``x1, y1, ..., x5, y5``) are in the loose crop's pixels, None where the CSVs lack
the image; the columns are left out when the CSVs are absent. ``NAME_ID`` is the path below the
split folder without ``.jpg``.

``pose``: the pose-template list holds image paths grouped by identity, in blocks of
``pose_template_size`` images per template [U: the block size is from the paper's protocol, not
from the file]; ``pose`` is the template's index within its identity as a string (``"0"``,
``"1"``...), ``""`` for images not in the list; the column exists only when the list does.

Bad input: a list entry with no file, an image that does not decode or whose name is not
``n<6 digits>/<digits>_<digits>.jpg``, and a bbox/landmark row for an image the split does not
hold are bad records for ``ErrorPolicy`` (``on_error``); a malformed ``identity_meta.csv`` or
bbox/landmark row that cannot be repaired raises ``DataError`` naming the file and line.
"""

from __future__ import annotations

import io
import csv
import re
from pathlib import Path

import pandas as pd
from vlrface.progress import tqdm

from vlrface.fileio import read_text
from vlrface.data.records import DataError, ErrorPolicy, describe_or_skip, finalize, inside_root

NAME = "vggface2"
SPLITS = ("train", "test")
META_HEADER = ["Class_ID", "Name", "Sample_Num", "Flag", "Gender"]
_IMAGE = re.compile(r"^n\d{6}/\d+_\d+\.jpg$")
_CLASS = re.compile(r"^n\d{6}$")


def read_identity_meta(path: Path) -> dict[str, dict]:
    """``identity_meta.csv`` as ``{class_id: {"name", "sample_num", "flag", "gender"}}``."""
    lines = read_text(path, "utf-8-sig").splitlines()
    if not lines or [h.strip() for h in lines[0].split(",")] != META_HEADER:
        raise DataError(f"{path}:1: expected the header {', '.join(META_HEADER)}")
    meta = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        class_id, _, rest = line.partition(",")
        fields = rest.rsplit(",", 3)  # a name may hold commas: keep them in the name
        try:
            name, num, flag, gender = (f.strip() for f in fields)
            row = {"name": name.strip('"'), "sample_num": int(num), "flag": int(flag)}
        except ValueError:
            row = None
        class_id = class_id.strip()
        if row is None or not _CLASS.match(class_id) or gender not in ("m", "f"):
            raise DataError(
                f"{path}:{n}: expected 'n<6 digits>, Name, Sample_Num, Flag, m|f', got {line!r}"
            )
        meta[class_id] = {**row, "gender": gender}
    return meta


def read_point_csv(path: Path, columns: int) -> list[tuple[int, str, tuple[float, ...]]]:
    """A ``bb_landmark`` CSV as ``(line, NAME_ID, values)``: ``columns`` numbers after NAME_ID."""
    rows = []
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.reader(f, skipinitialspace=True)
        header = next(reader, None)
        if not header or header[0].strip() != "NAME_ID" or len(header) != columns + 1:
            raise DataError(f"{path}:1: expected a NAME_ID header with {columns} value columns")
        for record in reader:
            if not record:
                continue
            try:
                values = tuple(float(v) for v in record[1:])
            except ValueError:
                values = ()
            if len(values) != columns:
                raise DataError(
                    f"{path}:{reader.line_num}: expected NAME_ID and {columns} numbers, "
                    f"got {','.join(record)!r}"
                )
            rows.append((reader.line_num, record[0].strip(), values))
    return rows


def _first(root: Path, *candidates: str) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_file()), None)


def _split_images(root: Path, split: str, policy: ErrorPolicy) -> list[str]:
    """The split's images as paths below the split folder (``n000002/0001_01.jpg``)."""
    listing = _first(root, f"{split}_list.txt", f"meta/{split}.txt")
    if listing is None:
        found = sorted(p.relative_to(root / split).as_posix() for p in (root / split).rglob("*"))
        entries = [(f"{root / split}/{e}", e) for e in found if (root / split / e).is_file()]
    else:
        lines = read_text(listing).splitlines()
        entries = [(f"{listing}:{n}", e.strip()) for n, e in enumerate(lines, 1) if e.strip()]
    images = []
    for where, entry in entries:
        if not _IMAGE.match(entry):
            policy.bad(f"{where}: {entry!r} is not a VGGFace2 image name n<6 digits>/<id>_<id>.jpg")
        elif not inside_root(root, f"{split}/{entry}", where).is_file():
            policy.bad(f"{where}: listed image {split}/{entry} does not exist")
        else:
            images.append(entry)
    return images


def _points(root: Path, split: str, kind: str, columns: int, images: set[str], policy):
    """``{image: values}`` from ``bb_landmark/loose_<kind>_<split>.csv``, or None if absent."""
    path = root / "bb_landmark" / f"loose_{kind}_{split}.csv"
    if not path.is_file():
        return None
    found = {}
    for line, name_id, values in read_point_csv(path, columns):
        if f"{name_id}.jpg" not in images:
            policy.bad(f"{path}:{line}: {kind} row for unknown image {name_id!r}")
            continue
        found[f"{name_id}.jpg"] = values
    return found


def read_pose_templates(path: Path, template_size: int = 5) -> dict[str, str]:
    """``{image below test/: template index within its identity}`` from the pose list."""
    seen: dict[str, int] = {}
    poses = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        if not _IMAGE.match(entry):
            raise DataError(f"{path}:{n}: expected n<6 digits>/<id>_<id>.jpg, got {line!r}")
        ident = entry.split("/")[0]
        poses[entry] = str(seen.get(ident, 0) // template_size)
        seen[ident] = seen.get(ident, 0) + 1
    return poses


def read_manifest(
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    splits: tuple[str, ...] = SPLITS,
    pose_template_size: int = 5,
) -> pd.DataFrame:
    """The manifest of a VGGFace2 root (``split`` in ``train, test``; the ``splits`` whose
    folder or list exists are read)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    policy = ErrorPolicy(on_error)
    meta_path = root / "meta" / "identity_meta.csv"
    meta = read_identity_meta(meta_path) if meta_path.is_file() else None
    pose_path = _first(root, "test_posetemp_imglist.txt", "meta/test_posetemp_imglist.txt")
    poses = read_pose_templates(pose_path, pose_template_size) if pose_path else None
    rows = []
    for split in splits:
        if not (root / split).is_dir():
            continue
        images = _split_images(root, split, policy)
        boxes = _points(root, split, "bb", 4, set(images), policy)
        marks = _points(root, split, "landmark", 10, set(images), policy)
        for image in tqdm(images, desc=f"manifest {split}", unit="img", disable=not progress):
            info = describe_or_skip(root / split / image, policy)
            if info is None:
                continue
            ident = image.split("/")[0]
            row = {"path": f"{split}/{image}", "identity": ident, "split": split, "source": NAME}
            if meta is not None:
                row.update(
                    name=meta.get(ident, {}).get("name", ""),
                    gender=meta.get(ident, {}).get("gender", ""),
                )
            if boxes is not None:
                row["bbox"] = boxes.get(image)
            if marks is not None:
                row["landmarks"] = marks.get(image)
            if poses is not None:
                row["pose"] = poses.get(image, "") if split == "test" else ""
            rows.append({**row, **info})
    if not rows:
        raise DataError(f"{root}: no readable VGGFace2 images under {' or '.join(splits)}/")
    return policy.stamp(finalize(rows))
