"""QMUL-SurvFace in its release layout (docs/datasets.md, QMUL-SurvFace).

::

    <root>/training_set/<pid>/<pid>_cam<k>_<n>.jpg                     split "train"
    <root>/Face_Verification_Test_Set/verification_images/*.jpg        split "verification"
        positive_pairs_names.mat   positive_pairs_names (Nx2 cell of file names)
        negative_pairs_names.mat   negative_pairs_names (Nx2 cell)
    <root>/Face_Identification_Test_Set/gallery/*.jpg                  split "gallery"
    <root>/Face_Identification_Test_Set/mated_probe/*.jpg              split "mated_probe"
    <root>/Face_Identification_Test_Set/unmated_probe/*.jpg            split "unmated_probe"
        gallery_img_ID_pairs.mat       gallery_set (Nx1 cell), gallery_ids (Nx1)
        mated_probe_img_ID_pairs.mat   mated_probe_set, mated_probe_ids

The ``.mat`` files are looked up in the test-set folder, then in the matching
``Face_*_Evaluation/`` folder, or passed explicitly. ``camera`` (``cam<k>``) is parsed from
file names of the ``<pid>_cam<k>_<n>.jpg`` form ("" otherwise). Identities are the training
folder names, the ``.mat`` ids (gallery, mated probes; they must equal the integer filename
prefix), or for verification images the integer filename prefix; unmated probes have none
(no ``.mat``: the folder is listed). ``protocol_index`` is the ``.mat`` list order, the
sorted name order for unmated probes, first appearance in the pair lists (positives first) for
verification images, and -1 for training images. ``read_pairs`` returns the verification pairs
with the official 10 folds: ``fold = index // 532`` within each polarity.

Bad input is handled as in ``vlrface.data.tinyface``; for pairs, a pair listed twice or a
positive (negative) pair whose filename prefixes differ (agree) is a bad record too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from vlrface.data.records import DataError, ErrorPolicy, inside_root
from vlrface.data.tinyface import (
    cell_names,
    check_splits,
    find_protocol_file,
    identity_folder_rows,
    listed_folder,
    listed_rows,
    load_mat,
    manifest_of,
    read_id_pairs,
)

NAME = "survface"
SPLITS = ("train", "verification", "gallery", "mated_probe", "unmated_probe")
FOLD_SIZE = 532  # pairs per fold and polarity: 5,320 = 10 x 532
_VERIFY = "Face_Verification_Test_Set"
_IDENTIFY = "Face_Identification_Test_Set"
_VERIFY_FOLDERS = (_VERIFY, "Face_Verification_Evaluation")  # where the .mat files may be
_IDENTIFY_FOLDERS = (_IDENTIFY, "Face_Identification_Evaluation")
_CAMERA = re.compile(r"^(\d+)_(cam\d+)_\d+\.jpg$", re.IGNORECASE)


def _camera(name: str) -> str:
    match = _CAMERA.match(name)
    return match.group(2).lower() if match else ""


def _pair_lists(
    root: Path,
    policy: ErrorPolicy,
    positive_mat: str | Path | None,
    negative_mat: str | Path | None,
) -> list[dict]:
    """The checked pairs of both ``.mat`` lists, positives first, in list order."""
    folder = f"{_VERIFY}/verification_images"
    seen: dict[frozenset, str] = {}
    pairs = []
    for same, given in ((True, positive_mat), (False, negative_mat)):
        var = f"{'positive' if same else 'negative'}_pairs_names"
        mat = find_protocol_file(root, f"{var}.mat", _VERIFY_FOLDERS, given)
        names = cell_names(load_mat(mat, (var,))[var], mat, var)
        if names.ndim != 2 or names.shape[1] != 2:
            raise DataError(f"{mat}: {var} must be an Nx2 cell, got shape {names.shape}")
        for i, (a, b) in enumerate(names.tolist()):
            where = f"{mat}: row {i + 1} ({a!r}, {b!r})"
            for name in (a, b):
                inside_root(root / folder, name, mat)  # an entry escaping its folder always raises
            key = frozenset((a, b))
            prefixes = {name.split("_")[0] for name in (a, b)}
            missing = [n for n in (a, b) if not (root / folder / n).is_file()]
            if key in seen:
                policy.bad(f"{where}: duplicate pair (first listed at {seen[key]})")
            elif missing:
                policy.bad(
                    f"{where}: unknown file in a protocol list: {missing[0]!r} is not in "
                    f"{root / folder}"
                )
            elif (len(prefixes) == 1) != same:
                policy.bad(
                    f"{where}: filename prefixes contradict a "
                    f"{'positive' if same else 'negative'} pair"
                )
            else:
                pairs.append(
                    {"path_a": f"{folder}/{a}", "path_b": f"{folder}/{b}", "same": same, "index": i}
                )
            seen.setdefault(key, f"{mat.name} row {i + 1}")
    return pairs


def read_pairs(
    root: str | Path,
    *,
    on_error: str = "raise",
    fold_size: int = FOLD_SIZE,
    positive_mat: str | Path | None = None,
    negative_mat: str | Path | None = None,
) -> pd.DataFrame:
    """The 1:1 verification pairs: ``path_a, path_b`` (relative to the root), ``same``,
    ``index`` (row in its ``.mat``) and ``fold`` (``index // fold_size``), positives first."""
    root = Path(root)
    policy = ErrorPolicy(on_error)
    pairs = pd.DataFrame(
        _pair_lists(root, policy, positive_mat, negative_mat),
        columns=["path_a", "path_b", "same", "index"],
    )
    pairs["fold"] = pairs["index"] // fold_size
    return policy.stamp(pairs)


def _verification_rows(
    root: Path,
    policy: ErrorPolicy,
    positive_mat: str | Path | None,
    negative_mat: str | Path | None,
) -> list[dict]:
    """One row per image of the pair lists, in first appearance, identity from its prefix."""
    rows: dict[str, dict] = {}
    for pair in _pair_lists(root, policy, positive_mat, negative_mat):
        for path in (pair["path_a"], pair["path_b"]):
            prefix = Path(path).name.split("_")[0]
            rows.setdefault(
                path,
                {
                    "path": path,
                    "identity": prefix if prefix.isdigit() else "",
                    "split": "verification",
                    "protocol_index": len(rows),
                },
            )
    return list(rows.values())


def _misnamed(name: str, identity: str) -> str | None:
    match = _CAMERA.match(name)
    if not match or match.group(1) != identity:
        return f"not named {identity}_cam<k>_<n>.jpg"
    return None


def read_manifest(
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    splits: Iterable[str] = SPLITS,
    positive_mat: str | Path | None = None,
    negative_mat: str | Path | None = None,
    gallery_mat: str | Path | None = None,
    mated_probe_mat: str | Path | None = None,
) -> pd.DataFrame:
    """The manifest of a QMUL-SurvFace root (``split`` in ``train, verification, gallery,
    mated_probe, unmated_probe``) with ``camera`` and ``protocol_index``; see the module
    docstring."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    splits = check_splits(splits, SPLITS)
    policy = ErrorPolicy(on_error)
    train = root / "training_set"
    rows = identity_folder_rows(train, policy, _misnamed) if "train" in splits else []
    if "verification" in splits:
        rows += _verification_rows(root, policy, positive_mat, negative_mat)
    for split, given in (("gallery", gallery_mat), ("mated_probe", mated_probe_mat)):
        if split in splits:
            mat = find_protocol_file(root, f"{split}_img_ID_pairs.mat", _IDENTIFY_FOLDERS, given)
            entries = read_id_pairs(mat, f"{split}_set", f"{split}_ids")
            rows += listed_rows(root, f"{_IDENTIFY}/{split}", mat, entries, split, policy)
    if "unmated_probe" in splits:
        rows += listed_folder(root, f"{_IDENTIFY}/unmated_probe", "unmated_probe")
    for row in rows:
        row["camera"] = _camera(Path(row["path"]).name)
    return manifest_of(root, rows, policy, NAME, progress)
