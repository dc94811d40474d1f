"""LFW in its raw release layout (docs/datasets.md, LFW).

::

    <root>/<Name>/<Name>_<NNNN>.jpg       (or <root>/lfw/..., lfw-deepfunneled/, lfw_funneled/)
    <root>/pairs.txt                      View 2: "10\\t300", then per set 300 matched
                                          "name\\tn1\\tn2" and 300 mismatched
                                          "name1\\tn1\\tname2\\tn2" lines
    <root>/pairsDevTrain.txt, pairsDevTest.txt   View 1: "N", then N matched, N mismatched
    <root>/people.txt                     "10", then per set a count and "name\\tnum_images" lines
    <root>/peopleDevTrain.txt, peopleDevTest.txt "N", then N "name\\tnum_images" lines

``identity`` is the person's folder name (``George_W_Bush``), ``split`` is ``test``; image
numbers are 1-based and written with 4 digits. ``read_pairs`` gives the pairs in file order with
``fold`` the View 2 set (0-9; 0 for View 1): the contiguous 10-fold split of insightface's LFW
routine.

Bad input: an image whose name does not fit its folder or that does not decode, and a pair
naming an image that is not on disk, are bad records for ``ErrorPolicy``; a missing or malformed
pairs/people file, a line count that disagrees with the header, or a path that escapes the root
raises ``DataError`` naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from vlrface.progress import tqdm

from vlrface.fileio import read_text
from vlrface.data.records import DataError, ErrorPolicy, describe_or_skip, finalize, inside_root

NAME = "lfw"
IMAGE_DIRS = ("lfw", "lfw-deepfunneled", "lfw_funneled", "lfw-funneled")
_IMAGE = re.compile(r"^(?P<name>.+)_\d{4}\.jpg$")


def image_dir(root: Path) -> Path:
    """The folder holding the ``<Name>/`` folders: one of ``IMAGE_DIRS`` inside ``root``, or
    ``root`` itself."""
    found = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
    if len(found) > 1:
        raise DataError(f"{root}: holds {', '.join(p.name for p in found)}; pass one as the root")
    return found[0] if found else root


def image_path(images: Path, root: Path, name: str, number: int) -> str:
    """The root-relative path of image ``number`` (1-based) of ``name``."""
    return (images / name / f"{name}_{number:04d}.jpg").relative_to(root).as_posix()


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: {what} file missing")
    lines = read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _header(path: Path, lines: list[str]) -> list[int]:
    try:
        counts = [int(v) for v in lines[0].split()]
    except (IndexError, ValueError):
        counts = []
    if len(counts) not in (1, 2):
        raise DataError(f"{path}:1: expected a header '<sets>\\t<n>' or '<n>', got {lines[:1]}")
    return counts


def _pairs(root: Path, path: Path, policy: ErrorPolicy) -> pd.DataFrame:
    lines = _lines(path, "pairs")
    counts = _header(path, lines)
    sets, n = counts if len(counts) == 2 else (1, counts[0])
    if len(lines) - 1 != sets * 2 * n:
        raise DataError(
            f"{path}:1: header {lines[0]!r} promises {sets} set(s) x 2 x {n} = {sets * 2 * n} "
            f"pair lines, the file has {len(lines) - 1}"
        )
    images, rows = image_dir(root), []
    for i, line in enumerate(lines[1:]):
        lineno, (fold, within) = i + 2, divmod(i, 2 * n)
        same, fields = within < n, line.split()
        try:
            if same and len(fields) == 3:
                ends = [(fields[0], int(fields[1])), (fields[0], int(fields[2]))]
            elif not same and len(fields) == 4:
                ends = [(fields[0], int(fields[1])), (fields[2], int(fields[3]))]
            else:
                raise ValueError
        except ValueError:
            form = "name\\tn1\\tn2" if same else "name1\\tn1\\tname2\\tn2"
            kind = "matched" if same else "mismatched"
            message = f"{path}:{lineno}: expected a {kind} pair '{form}', got {line!r}"
            raise DataError(message) from None
        where = f"{path}:{lineno}"
        pair = [inside_root(root, image_path(images, root, *end), where) for end in ends]
        if missing := [p for p in pair if not p.is_file()]:
            policy.bad(f"{where}: names {missing[0].relative_to(root)}, which is not on disk")
            continue
        a, b = (p.relative_to(root).as_posix() for p in pair)
        rows.append((fold, a, b, same))
    return pd.DataFrame(rows, columns=["fold", "path_a", "path_b", "same"])


def read_pairs(
    root: str | Path, *, pairs: str | Path | None = None, on_error: str = "raise"
) -> pd.DataFrame:
    """The verification pairs of ``pairs`` (default ``root/pairs.txt``): ``fold, path_a, path_b,
    same`` in file order, paths relative to ``root``."""
    root = Path(root)
    policy = ErrorPolicy(on_error)
    return policy.stamp(_pairs(root, Path(pairs) if pairs else root / "pairs.txt", policy))


def read_people(path: str | Path) -> pd.DataFrame:
    """``people.txt`` (View 2, per set) or ``peopleDev*.txt`` (View 1, one fold 0) as
    ``fold, name, images``."""
    path = Path(path)
    lines = _lines(path, "people")
    header = _header(path, lines)
    view2 = len(lines) > 1 and len(lines[1].split()) == 1
    if view2 and len(header) != 1:
        raise DataError(f"{path}:1: expected the number of sets, got {lines[0]!r}")
    blocks = header[0] if view2 else 1
    rows, pos = [], 1 if view2 else 0  # pos: the line holding the next block's count
    for fold in range(blocks):
        count = _count(path, lines, pos)
        for lineno in range(pos + 2, pos + 2 + count):
            fields = lines[lineno - 1].split() if lineno <= len(lines) else []
            if len(fields) != 2 or not fields[1].isdigit():
                got = lines[lineno - 1] if lineno <= len(lines) else "end of file"
                raise DataError(f"{path}:{lineno}: expected 'name\\tnum_images', got {got!r}")
            rows.append((fold, fields[0], int(fields[1])))
        pos += count + 1
    if pos != len(lines):
        raise DataError(f"{path}:{pos + 1}: lines past the {blocks} set(s) the header announces")
    return pd.DataFrame(rows, columns=["fold", "name", "images"])


def _count(path: Path, lines: list[str], pos: int) -> int:
    if pos >= len(lines) or not lines[pos].strip().isdigit():
        got = lines[pos] if pos < len(lines) else "end of file"
        raise DataError(f"{path}:{pos + 1}: expected a set's person count, got {got!r}")
    return int(lines[pos])


def _image_rows(root: Path, policy: ErrorPolicy) -> list[dict]:
    rows = []
    for person in sorted(p for p in image_dir(root).iterdir() if p.is_dir()):
        if person.name.startswith("."):
            continue
        for img in sorted(p for p in person.iterdir() if not p.name.startswith(".")):
            rel = img.relative_to(root).as_posix()
            inside_root(root, rel, root)  # a symlinked folder must not lead out of the root
            match = _IMAGE.match(img.name)
            if not img.is_file() or not match or match["name"] != person.name:
                policy.bad(f"{img}: not an LFW image name for folder {person.name}")
                continue
            rows.append({"path": rel, "identity": person.name, "split": "test", "source": NAME})
    return rows


def read_manifest(
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    pairs: str | Path | None = None,
) -> pd.DataFrame:
    """The manifest of an LFW root (every image, ``split`` ``test``). ``pairs``, if given, is
    checked against the images: a pair naming an image missing from the manifest is a bad
    record; ``df.attrs["pairs"]`` holds how many pairs it lists."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    policy = ErrorPolicy(on_error)
    rows = []
    for row in tqdm(
        _image_rows(root, policy), desc=f"manifest {root.name}", unit="img", disable=not progress
    ):
        info = describe_or_skip(root / row["path"], policy)
        if info is not None:
            rows.append({**row, **info})
    if not rows:
        raise DataError(f"{root}: no readable LFW images (<Name>/<Name>_NNNN.jpg)")
    df = finalize(rows)
    if pairs is not None:
        listed = _pairs(root, Path(pairs), policy)
        known = set(df["path"])
        for a, b in zip(listed["path_a"], listed["path_b"], strict=True):
            if a not in known or b not in known:
                policy.bad(f"{pairs}: pair ({a}, {b}) names an image missing from the manifest")
        df.attrs["pairs"] = len(listed)
    return policy.stamp(df)
