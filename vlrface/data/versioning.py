"""Data versions from DVC: the md5 of a ``.dvc`` pointer, checked against the files on disk.

A data version is the ``outs[0].md5`` of a pointer such as the top-level ``data.dvc``
(``dvc add data``). It travels into the pipeline as a step parameter, so ZenML's cache key
changes exactly when the data does, and onto every registered model.

Data outside the repository that DVC does not track (``data.dvc_file: null``, e.g. a shared,
read-only insightface pack under ``../shared``) is versioned by its content instead:
``content_version`` hashes every file under the root (path, size and bytes, in path order) into
one md5. That is a content identity, not a DVC version: nothing can ``dvc checkout`` it back,
so the registered model records ``tracked_by: content-md5`` next to the hash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from vlrface.data.records import DataError


@dataclass(frozen=True)
class DataVersion:
    dvc_file: str
    path: str  # the tracked path, relative to the pointer's folder
    md5: str
    nfiles: int
    size: int
    tracked_by: str = "dvc"  # or "content-md5": an untracked external root, hashed whole

    def as_dict(self) -> dict:
        return asdict(self)


def read_pointer(dvc_file: str | Path) -> DataVersion:
    """Parse a ``.dvc`` pointer written by ``dvc add``."""
    dvc_file = Path(dvc_file)
    if not dvc_file.is_file():
        raise DataError(
            f"{dvc_file}: DVC pointer not found; track the data root first (`dvc add <root>`, "
            "or `make data` for the demo set)"
        )
    try:
        outs = yaml.safe_load(dvc_file.read_text())["outs"]
        out = outs[0]
        return DataVersion(
            dvc_file=str(dvc_file),
            path=str(out["path"]),
            md5=str(out["md5"]),
            nfiles=int(out.get("nfiles", 1)),
            size=int(out.get("size", 0)),
        )
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{dvc_file}: not a DVC pointer with an 'outs' md5 ({exc})") from exc


def check_in_sync(dvc_file: str | Path) -> None:
    """Raise ``DataError`` if the tracked files differ from the pointer (``dvc status``)."""
    from dvc.repo import Repo

    dvc_file = Path(dvc_file).resolve()
    with Repo(Repo.find_root(str(dvc_file.parent))) as repo:
        status = repo.status(targets=[str(dvc_file)])
    if status:
        raise DataError(
            f"{dvc_file}: the tracked data differs from the pointer ({status}); run "
            f"`dvc add` to record the new data version or `dvc checkout` to restore it"
        )


def content_version(data_root: str | Path) -> DataVersion:
    """The version of an untracked data root: the md5 over every file under it (relative path,
    size, then its bytes, in sorted path order). Hidden files and folders are skipped."""
    import hashlib

    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{data_root}: data root does not exist or is not a directory")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(f"{data_root}: data root holds no files")
    digest, total = hashlib.md5(), 0
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        total += size
    return DataVersion(
        dvc_file="",
        path=str(data_root),
        md5=digest.hexdigest(),
        nfiles=len(files),
        size=total,
        tracked_by="content-md5",
    )


def resolve(dvc_file: str | Path | None, data_root: str | Path) -> DataVersion:
    """The data version of ``data_root``: its pointer's md5, verified against the disk.

    ``data_root`` must be the tracked path or lie inside it. Without a pointer (``None``: data
    that DVC does not track) the version is ``content_version(data_root)``.
    """
    if dvc_file is None:
        return content_version(data_root)
    version = read_pointer(dvc_file)
    tracked = (Path(dvc_file).resolve().parent / version.path).resolve()
    root = Path(data_root).resolve()
    if not root.is_dir():
        raise DataError(f"{data_root}: data root does not exist or is not a directory")
    if not root.is_relative_to(tracked):
        raise DataError(f"{data_root}: data root is not inside {tracked}, which {dvc_file} tracks")
    check_in_sync(dvc_file)
    return version


def existing(path: str | Path) -> Path:
    """``path`` if it is a file, else a ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path
