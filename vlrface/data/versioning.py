"""Data versions from DVC: the md5 of a ``.dvc`` pointer, checked against the files on disk.

A data version is the ``outs[0].md5`` of a pointer such as the top-level ``data.dvc``
(``dvc add data``). It travels into the pipeline as a step parameter, so ZenML's cache key
changes exactly when the data does, and onto every registered model.
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


def resolve(dvc_file: str | Path, data_root: str | Path) -> DataVersion:
    """The data version of ``data_root``: its pointer's md5, verified against the disk.

    ``data_root`` must be the tracked path or lie inside it.
    """
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
