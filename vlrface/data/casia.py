"""CASIA-WebFace in its original release layout.

``<root>/<7-digit id>/<3-digit n>.jpg`` (e.g. ``0000045/001.jpg``) and an optional ``names.txt``
with ``"<id> <Name>"`` per line (docs/datasets.md, CASIA-WebFace). The embedded synthetic demo set is
written in this layout, so this reader is what the demo pipeline runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from vlrface.progress import tqdm

from vlrface.fileio import read_text, image_problem
from vlrface.data.records import (
    DataError,
    ErrorPolicy,
    describe_image,
    finalize,
    identity_split,
)

NAME = "casia_webface"
_ID = re.compile(r"^\d{7}$")
_IMG = re.compile(r"^\d{3}\.jpg$")
# side files: names, READMEs, CelebA-1k raw layout's map to its source images
_SIDE_FILES = {"names.txt", "SYNTHETIC.md", "README.md", "README.txt", "source_images.json"}


def read_names(root: Path) -> dict[str, str]:
    """``names.txt`` as ``{id: name}`` (empty if the file is absent)."""
    path = root / "names.txt"
    if not path.exists():
        return {}
    names = {}
    for i, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not _ID.match(parts[0]):
            raise DataError(f"{path}:{i}: expected '<7-digit id> <Name>', got {line!r}")
        names[parts[0]] = parts[1]
    return names


def read_manifest(
    root: str | Path,
    test_fraction: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    *,
    on_error: str = "raise",
) -> pd.DataFrame:
    """Walk a CASIA-WebFace root and return its manifest.

    The release has no test split: every row is ``train`` unless ``test_fraction`` holds out a
    stable share of identities as ``test`` (``records.identity_split``). Raises ``DataError``
    naming the path for a missing or empty root, or for a file or folder that is not part of the
    layout. An image that does not decode is kept with ``decodable=False`` (the GX suite then
    fails naming it) or, with ``on_error="skip"``, left out and counted.
    """
    policy = ErrorPolicy(on_error)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    names = read_names(root)
    files = []
    for entry in sorted(root.iterdir()):
        if entry.name in _SIDE_FILES or entry.name.startswith("."):
            continue
        if not entry.is_dir() or not _ID.match(entry.name):
            raise DataError(f"{entry}: not a CASIA-WebFace identity folder (expected 7 digits)")
        for img in sorted(entry.iterdir()):
            if not _IMG.match(img.name):
                raise DataError(f"{img}: not a CASIA-WebFace image name (expected NNN.jpg)")
            if not img.resolve().is_relative_to(root.resolve()):
                raise DataError(f"{img}: resolves outside the data root {root}")
            files.append(img)
    if not files:
        raise DataError(f"{root}: data root holds no CASIA-WebFace images (<id>/<NNN>.jpg)")
    rows = []
    for img in tqdm(files, desc=f"manifest {root.name}", unit="img", disable=not progress):
        ident = img.parent.name
        described = describe_image(img)
        if not described["decodable"] and policy.mode == "skip":
            problem = image_problem(img.read_bytes(), img.name) or "corrupt"
            policy.bad(f"{img}: cannot decode image ({problem})")
            continue
        rows.append(
            {
                "path": f"{ident}/{img.name}",
                "identity": ident,
                "source": NAME,
                "split": identity_split(ident, seed, test_fraction),
                "name": names.get(ident, ""),
                **described,
            }
        )
    return policy.stamp(finalize(rows))
