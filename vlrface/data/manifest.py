"""Manifests on disk: a reader's DataFrame as Parquet, with where it came from in the schema.

``build_manifest`` runs a registered reader (``vlrface.data.datasets``) over a dataset root and
``write_manifest`` stores the result atomically (a temp file beside the target, then a rename), so a
crashed or interrupted run never leaves a half-written manifest for DVC or a pipeline to pick
up. The Parquet schema metadata key ``vlrface`` holds the provenance as JSON: dataset, root,
reader and its version (module + sha256 of its source), options, rows, skipped records, and,
when the root is DVC-tracked, the DVC md5 of the root (``dvc_md5``, the same hash ``dvc``
records for it as a stage dependency) and of its pointer (``dvc_pointer_md5``).
``load_manifest`` reads it back.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vlrface.data import datasets, versioning
from vlrface.errors import DataError
from vlrface.fileio import write_atomic

META_KEY = b"vlrface"


def reader_version(module: str) -> str:
    """``<module>@<sha256 of its source, 12 hex>``: changes whenever the reader's code does."""
    source = Path(importlib.import_module(module).__file__).read_bytes()
    return f"{module}@{hashlib.sha256(source).hexdigest()[:12]}"


def _dvc_repo(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def dvc_provenance(root: str | Path) -> dict:
    """The DVC version of ``root``: ``{}`` unless a ``<tracked>.dvc`` pointer covers it.

    ``dvc_md5`` is the md5 of ``root`` itself as DVC hashes a directory: the pointer's md5 when
    the pointer tracks exactly ``root``, else the md5 of ``root``'s subtree of the tracked
    directory, taken from the ``.dir`` listing in the DVC cache. Raises ``DataError`` when the
    files on disk differ from the pointer (the md5 would not describe them).
    """
    root = Path(root).resolve()
    repo_root = _dvc_repo(root)
    if repo_root is None:
        return {}
    for tracked in (root, *root.parents):
        pointer = tracked.parent / f"{tracked.name}.dvc"
        if pointer.is_file():
            break
        if tracked == repo_root:
            return {}
    version = versioning.read_pointer(pointer)
    versioning.check_in_sync(pointer)
    md5 = version.md5 if tracked == root else _subtree_md5(repo_root, version.md5, root, tracked)
    return {
        "dvc_file": str(pointer.relative_to(repo_root)),
        "dvc_pointer_md5": version.md5,
        "dvc_path": str(root.relative_to(repo_root)),
        "dvc_md5": md5,
    }


def _subtree_md5(repo_root: Path, dir_md5: str, root: Path, tracked: Path) -> str:
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    with Repo(str(repo_root)) as repo:
        odb = repo.cache.local
        tree = Tree.load(odb, HashInfo("md5", dir_md5))
        sub = tree.get_obj(odb, root.relative_to(tracked).parts)
    if sub is None:
        raise DataError(f"{root}: not in the DVC-tracked tree of {tracked}")
    return sub.hash_info.value


def build_manifest(
    dataset: str,
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    protocol: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Run ``dataset``'s reader over ``root``; the manifest carries its provenance in
    ``df.attrs["provenance"]``. ``protocol`` maps reader keywords to protocol files."""
    spec = datasets.get(dataset)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root of {dataset} does not exist or is not a directory")
    protocol = {k: str(v) for k, v in (protocol or {}).items()}
    for path in protocol.values():
        versioning.existing(path)  # a missing protocol file is named before the long read
    dvc = dvc_provenance(root)  # before reading: a root out of sync fails fast
    read = spec.reader()
    kwargs = {**spec.reader_kwargs, **protocol, "progress": progress}
    if "on_error" in inspect.signature(read).parameters:
        kwargs["on_error"] = on_error
    elif on_error != "raise":
        raise DataError(f"{dataset}: the reader {spec.module} has no on_error={on_error!r} mode")
    df = read(root, **kwargs)
    df.attrs["provenance"] = {
        "dataset": dataset,
        "title": spec.title,
        "root": str(root),
        "reader": f"{spec.module}.{spec.function}",
        "reader_version": reader_version(spec.module),
        "on_error": on_error,
        "protocol": protocol,
        "rows": len(df),
        "skipped": int(df.attrs.get("skipped", 0)),
        "skipped_examples": list(df.attrs.get("skipped_examples", [])),
        **dvc,
    }
    return df


def write_manifest(df: pd.DataFrame, out: str | Path) -> Path:
    """Write ``df`` (and ``df.attrs["provenance"]``) to ``out`` atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**(table.schema.metadata or {}), META_KEY: json.dumps(df.attrs.get("provenance", {}))}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buffer)
    return write_atomic(out, buffer.getvalue())


def load_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest written by ``write_manifest``; its provenance in ``df.attrs["provenance"]``."""
    path = versioning.existing(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet manifest ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(f"{path}: Parquet file has no vlrface provenance (not a manifest)")
    df = table.to_pandas()
    df.attrs = {"provenance": json.loads(raw)}
    return df
