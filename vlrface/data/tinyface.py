"""QMUL-TinyFace in its release layout (docs/datasets.md, QMUL-TinyFace).

::

    <root>/Training_Set/<PersonID>/<PersonID>_<name>.jpg   split "train"
    <root>/Testing_Set/Probe/*.jpg                         split "probe"
    <root>/Testing_Set/Gallery_Match/*.jpg                 split "gallery"
    <root>/Testing_Set/Gallery_Distractor/*.jpg            split "distractor" (no identity)
    <root>/Testing_Set/probe_img_ID_pairs.mat              probe_set (Nx1 cell), probe_ids (Nx1)
    <root>/Testing_Set/gallery_match_img_ID_pairs.mat      gallery_set, gallery_ids

The ``.mat`` files are looked up in ``Testing_Set/``, then in ``Face_Identification_Evaluation/``
(where some distributions keep them), or passed explicitly. Probe and gallery rows come
from the ``.mat`` lists, not from the folders, and ``protocol_index`` keeps the list order: the
official devkit ranks features in that order. Distractors have no list; their
``protocol_index`` is the sorted file-name order (MATLAB ``dir``). Training rows have
``protocol_index`` -1 and their folder name as identity; test identities are the ``.mat`` ids,
which must equal the integer filename prefix. Only ``*.jpg`` files are read.

Bad input: a missing or unreadable ``.mat``, or one without the expected variables, raises
``DataError`` naming it. A list entry naming a file not on disk ("unknown file in a protocol
list"), an entry listed twice, an id that disagrees with the filename prefix, a training image
whose prefix is not its folder and an image that does not decode are bad records, raised or
skipped and counted by ``ErrorPolicy`` (``on_error``). A list entry that leaves its folder
(``../x.jpg``) always raises.

The ``.mat`` helpers here are shared with the QMUL-SurvFace reader (same devkit conventions).
"""

from __future__ import annotations

import atexit
import io
import pickle
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import loadmat
from scipy.io.matlab import MatReadError
from vlrface.progress import tqdm

from vlrface.data.records import DataError, ErrorPolicy, describe_or_skip, finalize, inside_root

NAME = "tinyface"
SPLITS = ("train", "probe", "gallery", "distractor")
_MAT_FOLDERS = ("Testing_Set", "Face_Identification_Evaluation")
_LISTS = {  # split: (image folder, .mat file); its variables are <split>_set, <split>_ids
    "probe": ("Probe", "probe_img_ID_pairs.mat"),
    "gallery": ("Gallery_Match", "gallery_match_img_ID_pairs.mat"),
}


def find_protocol_file(
    root: Path, name: str, folders: Iterable[str], given: str | Path | None = None
) -> Path:
    """``given`` if set, else the first ``root/<folder>/<name>`` that exists, else
    ``DataError`` naming where it looked."""
    if given:
        return Path(given)
    tried = [root / folder / name for folder in folders]
    for path in tried:
        if path.is_file():
            return path
    raise DataError(
        f"{tried[0]}: protocol file missing (also looked for {', '.join(map(str, tried[1:]))})"
    )


MAT_TIMEOUT_S = 60.0
_MAT_LIMIT = 256 << 20  # a devkit list is kilobytes; refuse anything this large unread


# the child interpreter (``python -I -c``): one JSON path a line in, one length-prefixed
# pickle of ("ok", variables) or ("error", message) out, until stdin closes
_CHILD = """
import json, pickle, struct, sys
from scipy.io import loadmat
for line in sys.stdin.buffer:
    try:
        mat = loadmat(json.loads(line))
        out = ("ok", {k: v for k, v in mat.items() if not k.startswith("__")})
    except Exception as e:
        out = ("error", type(e).__name__ + ": " + str(e)[:300])
    data = pickle.dumps(out, protocol=4)
    sys.stdout.buffer.write(struct.pack(">Q", len(data)) + data)
    sys.stdout.buffer.flush()
"""


class _MatUnpickler(pickle.Unpickler):
    """Only numpy arrays and scipy's MATLAB types come back from the child."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" or module.startswith("scipy.io.matlab"):
            return super().find_class(module, name)
        if module == "builtins" and name in ("str", "bytes", "int", "float", "complex", "dict"):
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


class _MatReader:
    """``scipy.io.loadmat`` in a long-lived child interpreter: a file that crashes the parser
    (scipy's C reader can segfault on crafted input) or hangs it ends only the child, which the
    next file starts again. One child serves many files (~1 ms each instead of ~0.4 s)."""

    def __init__(self):
        self.proc = None
        self.lock = threading.Lock()

    def _start(self):
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def _read(self, n: int, deadline: float) -> bytes:
        import select

        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise TimeoutError
            chunk = self.proc.stdout.read1(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _stop(self) -> int | None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            code = self.proc.wait()
            self.proc = None
            return code
        return None

    def load(self, path: Path) -> tuple[str, object]:
        import json
        import struct

        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            deadline = time.monotonic() + MAT_TIMEOUT_S
            try:
                self.proc.stdin.write(json.dumps(str(path)).encode() + b"\n")
                self.proc.stdin.flush()
                (size,) = struct.unpack(">Q", self._read(8, deadline))
                raw = self._read(size, deadline)
            except TimeoutError:
                self._stop()
                raise DataError(
                    f"{path}: the MATLAB reader took over {MAT_TIMEOUT_S:g} s; refused"
                ) from None
            except (EOFError, BrokenPipeError, OSError):
                code = self._stop()
                raise DataError(
                    f"{path}: not a readable MATLAB .mat file (the reader crashed on it, exit "
                    f"{code})"
                ) from None
        try:
            return _MatUnpickler(io.BytesIO(raw)).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: not a readable MATLAB .mat file ({e})") from None


_MAT_READER = _MatReader()
atexit.register(_MAT_READER._stop)


def _isolated_loadmat(path: Path) -> dict:
    status, value = _MAT_READER.load(path)
    if status != "ok":
        raise DataError(f"{path}: not a readable MATLAB .mat file ({value})")
    return value


def load_mat(path: Path, variables: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named variables of a MATLAB (v5) ``.mat`` file; ``DataError`` if it lacks one or
    does not read. The header is checked here, the file parsed in a child process."""
    if not path.is_file():
        raise DataError(f"{path}: protocol file missing")
    with path.open("rb") as f:
        head = f.read(128)
    if len(head) < 128 or path.stat().st_size > _MAT_LIMIT:
        raise DataError(f"{path}: not a readable MATLAB .mat file (v5 header missing: {path.stat().st_size} bytes)")
    if head[126:128] not in (b"IM", b"MI"):
        raise DataError(f"{path}: not a readable MATLAB .mat file (no v5 endian indicator in its header)")
    mat = _isolated_loadmat(path)
    if any(v not in mat for v in variables):
        found = sorted(mat)
        raise DataError(f"{path}: expected variables {', '.join(variables)}; found {found}")
    return {v: mat[v] for v in variables}


def cell_names(cells: np.ndarray, path: Path, variable: str) -> np.ndarray:
    """A MATLAB cell of file names (each a 1-element char array) as a str array, same shape."""
    out = np.empty(cells.shape, dtype=object)
    for index, cell in np.ndenumerate(cells):
        flat = np.asarray(cell).ravel()
        if flat.size != 1 or not isinstance(flat[0], str) or not flat[0]:
            at = tuple(i + 1 for i in index)  # MATLAB's 1-based (row, column)
            raise DataError(f"{path}: {variable}{at} is not a file name: {cell!r}")
        out[index] = str(flat[0])
    return out


def read_id_pairs(path: Path, set_var: str, ids_var: str) -> list[tuple[str, int]]:
    """The ``(file name, id)`` rows of a devkit ``*_img_ID_pairs.mat``, in list order."""
    mat = load_mat(path, (set_var, ids_var))
    names = cell_names(mat[set_var], path, set_var).ravel()
    try:
        ids = np.asarray(mat[ids_var], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DataError(f"{path}: {ids_var} is not a numeric array") from None
    if len(names) != len(ids):
        raise DataError(f"{path}: {set_var} has {len(names)} entries but {ids_var} {len(ids)}")
    if not np.array_equal(ids, np.round(ids)):
        raise DataError(f"{path}: {ids_var} holds non-integer ids")
    return list(zip(names.tolist(), ids.astype(np.int64).tolist(), strict=True))


def listed_rows(
    root: Path,
    folder: str,
    mat: Path,
    entries: list[tuple[str, int]],
    split: str,
    policy: ErrorPolicy,
) -> list[dict]:
    """Rows for the images a protocol list names, checked, with their list position."""
    rows, first = [], {}
    for i, (name, ident) in enumerate(entries):
        where = f"{mat}: row {i + 1} ({name!r})"
        inside_root(root / folder, name, mat)  # an entry escaping its folder always raises
        prefix = name.split("_")[0]
        if name in first:
            policy.bad(f"{where}: duplicate entry (first listed at row {first[name] + 1})")
        elif not prefix.isdigit() or int(prefix) != ident:
            policy.bad(f"{where}: id {ident} disagrees with the filename prefix")
        elif not (root / folder / name).is_file():
            policy.bad(f"{where}: unknown file in a protocol list (not in {root / folder})")
        else:
            rows.append(
                {
                    "path": f"{folder}/{name}",
                    "identity": str(ident),
                    "split": split,
                    "protocol_index": i,
                }
            )
        first.setdefault(name, i)
    return rows


def listed_folder(root: Path, folder: str, split: str) -> list[dict]:
    """Rows for every ``*.jpg`` of an unlisted folder (no identity), in sorted name order."""
    return [
        {"path": f"{folder}/{img.name}", "identity": "", "split": split, "protocol_index": i}
        for i, img in enumerate(jpgs(root / folder))
    ]


def jpgs(folder: Path) -> list[Path]:
    """The ``*.jpg`` files of ``folder``, sorted; ``DataError`` if the folder is missing."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder missing")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")


def check_splits(splits: Iterable[str], known: tuple[str, ...]) -> set[str]:
    """``splits`` as a set; ``ValueError`` naming any not in ``known``."""
    splits = set(splits)
    if unknown := splits - set(known):
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected some of {known}")
    return splits


def manifest_of(
    root: Path, rows: list[dict], policy: ErrorPolicy, source: str, progress: bool
) -> pd.DataFrame:
    """The stamped manifest of ``rows`` with size, hash and decoded shape added; an image that
    does not decode is a bad record; ``DataError`` if no image is left."""
    described = []
    for row in tqdm(rows, desc=f"manifest {root.name}", unit="img", disable=not progress):
        info = describe_or_skip(root / row["path"], policy)
        if info is not None:
            described.append({**row, "source": source, **info})
    if not described:
        raise DataError(f"{root}: no readable images in the requested splits")
    return policy.stamp(finalize(described))


def identity_folder_rows(train: Path, policy: ErrorPolicy, misnamed) -> list[dict]:
    """The training rows of a QMUL ``train`` folder of ``<identity>/*.jpg`` (TinyFace's
    ``Training_Set``, SurvFace's ``training_set``): identity the folder name, ``protocol_index``
    -1, ``path`` relative to the release root. ``misnamed(file name, identity)`` says why a file's
    name does not belong to its folder (None: it does); such a file is a bad record."""
    if not train.is_dir():
        raise DataError(f"{train}: folder missing")
    rows = []
    for person in sorted(p for p in train.iterdir() if p.is_dir()):
        for img in jpgs(person):
            why = misnamed(img.name, person.name)
            if why:
                policy.bad(f"{img}: {why}")
                continue
            rows.append(
                {
                    "path": f"{train.name}/{person.name}/{img.name}",
                    "identity": person.name,
                    "split": "train",
                    "protocol_index": -1,
                }
            )
    return rows


def _misnamed(name: str, identity: str) -> str | None:
    if name.split("_")[0] != identity:
        return f"filename prefix is not its identity folder {identity!r}"
    return None


def read_manifest(
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    splits: Iterable[str] = SPLITS,
    probe_mat: str | Path | None = None,
    gallery_mat: str | Path | None = None,
) -> pd.DataFrame:
    """The manifest of a QMUL-TinyFace root (``split`` in ``train, probe, gallery,
    distractor``), with a ``protocol_index`` column; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    splits = check_splits(splits, SPLITS)
    policy = ErrorPolicy(on_error)
    train = root / "Training_Set"
    rows = identity_folder_rows(train, policy, _misnamed) if "train" in splits else []
    given = {"probe": probe_mat, "gallery": gallery_mat}
    for split, (folder, mat_name) in _LISTS.items():
        if split in splits:
            mat = find_protocol_file(root, mat_name, _MAT_FOLDERS, given[split])
            entries = read_id_pairs(mat, f"{split}_set", f"{split}_ids")
            rows += listed_rows(root, f"Testing_Set/{folder}", mat, entries, split, policy)
    if "distractor" in splits:
        rows += listed_folder(root, "Testing_Set/Gallery_Distractor", "distractor")
    return manifest_of(root, rows, policy, NAME, progress)
