"""The manifest: one row per face image, the shared record type of every dataset reader.

A manifest is a ``pandas.DataFrame`` with (at least) the columns of ``MANIFEST_COLUMNS``. Paths
are relative to the dataset root, so a manifest stays valid when the root moves (DVC checkout,
a pod's volume). Images are described, not loaded: training and evaluation stream from it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from vlrface.errors import DataError

__all__ = ["DataError", "MANIFEST_COLUMNS", "describe_image", "finalize", "identity_split",
           "label_map"]

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


def describe_image(path: Path) -> dict:
    """Size, sha256 and decoded shape of one image file (``decodable=False`` if it won't)."""
    raw = path.read_bytes()
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED) if raw else None
    if img is None:
        h = w = c = -1
    else:
        h, w = img.shape[:2]
        c = 1 if img.ndim == 2 else img.shape[2]
    return {
        "width": w, "height": h, "channels": c, "decodable": img is not None,
        "size_bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
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
