"""The manifest: one row per face image, the shared record type of every dataset reader.

A manifest is a ``pandas.DataFrame`` with (at least) the columns of ``MANIFEST_COLUMNS``. Paths
are relative to the dataset root, so a manifest stays valid when the root moves (DVC checkout,
a pod's volume). Images are described, not loaded: training and evaluation stream from it.

The contract every dataset reader (``vlrface/data/<dataset>.py``) follows:

* ``path``: the image file relative to the dataset root (``0000045/001.jpg``), or for a record
  inside an insightface RecordIO pack ``<pack>.rec#<key>`` (``train.rec#17``); ``read_bytes``
  returns the encoded image either way.
* ``identity``: the dataset's own identity id as a string, namespaced only when datasets are
  combined (``combine_identities``); ``-1``/unknown identities (distractors, unmated probes) are
  the empty string.
* ``split``: the release's own partition name (``train``, ``test``, ``probe``, ``gallery``,
  ``distractor``, ``mugshot``, ``surveillance``...); each reader documents its values.
* optional metadata columns, present only where the release has them: ``camera`` (str),
  ``distance`` (int), ``pose`` (str), ``landmarks`` (10 floats ``x1, y1, ..., x5, y5`` in the
  stored image's pixels), ``landmarks4`` (8 floats: eyes, nose, mouth centre, where a release
  ships 4 points, as SCface does), ``bbox`` (``x, y, w, h``), ``template_id``, ``media_id``
  (int), ``faceness`` (float), ``name`` (str), ``protocol_index`` (the row's position in the
  release's protocol list, whose order an official devkit ranks in).
* ``width``/``height`` are the stored image's native resolution (the VLR sets' faces are < 32 px).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from vlrface.data import recordio
from vlrface.errors import DataError
from vlrface.fileio import image_problem

__all__ = [
    "DataError",
    "MANIFEST_COLUMNS",
    "OPTIONAL_COLUMNS",
    "describe_bytes",
    "describe_image",
    "describe_or_skip",
    "ErrorPolicy",
    "finalize",
    "identity_split",
    "inside_root",
    "label_map",
    "read_bytes",
]

MANIFEST_COLUMNS = {
    "path": "object",  # relative to the dataset root
    "identity": "object",  # the dataset's own identity id, as a string
    "split": "object",  # train | test
    "source": "object",  # dataset name, e.g. casia_webface
    "width": "int64",  # decoded size; -1 where the image does not decode
    "height": "int64",
    "channels": "int64",
    "decodable": "bool",
    "size_bytes": "int64",
    "sha256": "object",
}


OPTIONAL_COLUMNS = (
    "name",
    "camera",
    "distance",
    "pose",
    "landmarks",
    "landmarks4",
    "bbox",
    "template_id",
    "media_id",
    "faceness",
    "protocol_index",
)


def inside_root(root: Path, relative: str, source: Path | str) -> Path:
    """``root / relative``, or ``DataError`` naming ``source`` if it escapes the dataset root."""
    if "\x00" in str(relative):
        raise DataError(f"{source}: path {relative!r} holds a NUL byte")
    path = Path(root) / relative
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(Path(root).resolve()):
        raise DataError(f"{source}: path {relative!r} escapes the dataset root {root}")
    return path


def describe_image(path: Path) -> dict:
    """Size, sha256 and decoded shape of one image file (``decodable=False`` if it won't)."""
    return describe_bytes(path.read_bytes(), path.name)


def describe_or_skip(path: Path, policy: ErrorPolicy) -> dict | None:
    """``describe_image``, where an image that does not decode is a bad record: raised by
    ``policy``, or ``None`` for the reader to leave it out."""
    raw = path.read_bytes()
    info = describe_bytes(raw, path.name)
    if info["decodable"]:
        return info
    policy.bad(f"{path}: image does not decode ({image_problem(raw, path.name) or 'corrupt'})")
    return None


def describe_bytes(raw: bytes, name: str | None = None) -> dict:
    """Size, sha256 and decoded shape of one encoded image: ``decodable=False`` if it won't
    decode or ``fileio.image_problem`` finds it truncated, too large or of another format than
    ``name`` says (checked before any decode)."""
    ok = bool(raw) and image_problem(raw, name) is None
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED) if ok else None
    if img is None:
        h = w = c = -1
    else:
        h, w = img.shape[:2]
        c = 1 if img.ndim == 2 else img.shape[2]
    return {
        "width": w,
        "height": h,
        "channels": c,
        "decodable": img is not None,
        "size_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def identity_split(identity: str, seed: int, test_fraction: float) -> str:
    """``"test"`` for a stable ``test_fraction`` of identities, else ``"train"``.

    Decided per identity from a hash of ``(seed, identity)``, so adding identities to a dataset
    never moves an existing identity to the other side.
    """
    h = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return "test" if int.from_bytes(h[:8], "big") / 2**64 < test_fraction else "train"


def finalize(rows: list[dict]) -> pd.DataFrame:
    """A manifest DataFrame with the standard columns first, sorted by path."""
    df = pd.DataFrame(rows)
    for col, dtype in MANIFEST_COLUMNS.items():
        if col not in df:
            raise KeyError(f"manifest rows lack column {col!r}")
        df[col] = df[col].astype(dtype)
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[list(MANIFEST_COLUMNS) + extra].sort_values("path", ignore_index=True)


def label_map(df: pd.DataFrame) -> dict[str, int]:
    """Contiguous class labels 0..C-1 for the identities of ``df``, in sorted order."""
    return {ident: i for i, ident in enumerate(sorted(df["identity"].unique()))}


class ErrorPolicy:
    """What a reader does with a bad record: ``raise`` (default) stops at the first one with a
    ``DataError`` naming the file and the problem; ``skip`` leaves it out and counts it.

    ``stamp`` records the count on the manifest (``df.attrs["skipped"]``, with up to ten
    messages in ``df.attrs["skipped_examples"]``) so the pipeline can log it.
    """

    MODES = ("raise", "skip")

    def __init__(self, mode: str = "raise"):
        if mode not in self.MODES:
            raise ValueError(f"on_error must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.skipped: list[str] = []

    def bad(self, message: str) -> None:
        """Report one bad record: raise, or remember it and let the caller skip it."""
        if self.mode == "raise":
            raise DataError(message)
        self.skipped.append(message)

    def stamp(self, df: pd.DataFrame) -> pd.DataFrame:
        df.attrs["skipped"] = len(self.skipped)
        df.attrs["skipped_examples"] = self.skipped[:10]
        return df


_PACK_PATH = re.compile(r"^(?P<pack>[^#]+\.rec)#(?P<key>\d+)$")


def read_bytes(root: str | Path, path: str) -> bytes:
    """The encoded image of a manifest row: the file ``root/path``, or for ``<pack>.rec#<key>``
    the payload of that record (its ``IRHeader`` and label stripped). ``DataError`` naming the
    file if it is missing, escapes the root, or the record does not read."""
    match = _PACK_PATH.match(path)
    if match is None:
        file = inside_root(Path(root), path, root)
        if not file.is_file():
            raise DataError(f"{file}: image file missing")
        return file.read_bytes()
    rec, key = inside_root(Path(root), match["pack"], root), int(match["key"])
    _, payload = recordio.unpack(_pack_reader(str(rec)).read(key), f"{rec}#{key}")
    return payload


@functools.lru_cache(maxsize=64)
def _pack_reader(rec: str) -> recordio.IndexedRecordReader:
    """One reader per pack, cached: it holds the index (16 bytes a record) and opens its
    ``.rec`` anew in each process that reads (fork-safe)."""
    return recordio.IndexedRecordReader(rec)
