"""insightface RecordIO packs and ``.bin`` verification packs (docs/datasets.md, insightface packs).

::

    <root>/train.rec, train.idx   dmlc RecordIO (vlrface.data.recordio)
    <root>/property               "num_classes,H,W" (a second line, the image count, is ignored)
    <root>/lfw.bin cfp_fp.bin agedb_30.bin ...   verification packs

Roots: ``ms1m-retinaface-t1/`` (MS1MV3), ``faces_emore/`` (MS1MV2), ``faces_webface_112x112/``
(CASIA-WebFace); the folder name gives the ``source`` unless one is passed.

Records: record 0 is the header when it has an array label and no payload, label
``[N + 1, N + 1 + C]``: images are keys ``1..N`` and identity records keys ``N + 1..N + C``, each
with label ``[start, end)``, the image keys of class ``key - N - 1``. Without that header (a
plain im2rec file) every indexed record is an image. An image's class is its scalar label, or
``label[0]`` for an array label. Manifest rows: ``path`` ``train.rec#<key>``, ``identity`` the
class id, ``split`` ``train``; width/height/sha256/size describe the JPEG payload.

Bad input: a record that does not read (bad magic, truncated), whose class disagrees with the
identity records, or whose image does not decode is a bad record for ``ErrorPolicy``; a
garbled ``.idx``, ``property`` or header record raises ``DataError`` naming the file.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from vlrface.progress import tqdm

from vlrface.data import recordio
from vlrface.data.records import DataError, ErrorPolicy, describe_bytes, finalize
from vlrface.fileio import read_text, image_problem

SOURCES = {
    "ms1m-retinaface-t1": "ms1m_retinaface",
    "faces_emore": "ms1mv2",
    "faces_webface_112x112": "casia_webface_pack",
}


def read_property(path: str | Path) -> tuple[int, int, int]:
    """``(num_classes, height, width)`` from the first line of a ``property`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: property file missing")
    first = read_text(path).splitlines()[:1]
    try:
        classes, height, width = (int(v) for v in first[0].split(","))
    except (IndexError, ValueError):
        raise DataError(f"{path}:1: expected 'num_classes,H,W', got {first[:1]}") from None
    return classes, height, width


def read_layout(reader: recordio.IndexedRecordReader) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image keys, ranges)``: keys ``1..N`` and the ``(C, 2)`` ``[start, end)`` image keys
    of each class under a header record 0; every indexed key and None for a plain im2rec file."""
    if 0 not in reader:
        return reader.keys, None
    where = f"{reader.rec_path}#0"
    head, payload = recordio.unpack(reader.read(0), where)
    if head.flag == 0 or payload:  # record 0 is an image: a plain im2rec file
        return reader.keys, None
    if head.flag < 2:
        raise DataError(f"{where}: header record needs label [N + 1, N + 1 + C], got {head}")
    first, end = int(head.label[0]), int(head.label[1])
    ranges = np.empty((max(end - first, 0), 2), np.int64)
    for i, key in enumerate(range(first, end)):
        ident, _ = recordio.unpack(reader.read(key), f"{reader.rec_path}#{key}")
        if ident.flag < 2:
            raise DataError(f"{reader.rec_path}#{key}: identity record needs label [start, end)")
        ranges[i] = ident.label[:2]
    return np.arange(1, first, dtype=np.int64), ranges


def read_manifest(
    root: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    source: str | None = None,
    pack: str = "train",
) -> pd.DataFrame:
    """The manifest of the ``<pack>.rec`` in ``root`` (``split`` is ``train``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a directory")
    source = source or SOURCES.get(root.name, "insightface")
    policy = ErrorPolicy(on_error)
    reader = recordio.IndexedRecordReader(root / f"{pack}.rec")
    keys, ranges = read_layout(reader)
    if ranges is not None and (root / "property").exists():
        classes = read_property(root / "property")[0]
        if classes != len(ranges):
            raise DataError(
                f"{root / 'property'}: {classes} classes, the header record lists {len(ranges)}"
            )
    rows = []
    for key in tqdm(keys, desc=f"manifest {root.name}", unit="img", disable=not progress):
        where = f"{reader.rec_path}#{key}"
        try:
            head, payload = recordio.unpack(reader.read(int(key)), where)
        except DataError as exc:
            policy.bad(str(exc))
            continue
        label = int(head.label if head.flag == 0 else head.label[0])
        if ranges is not None and not (
            0 <= label < len(ranges) and ranges[label, 0] <= key < ranges[label, 1]
        ):
            policy.bad(f"{where}: class {label} disagrees with the identity records")
            continue
        info = describe_bytes(payload)
        if not info["decodable"]:
            policy.bad(f"{where}: image does not decode (corrupt or truncated)")
            continue
        rows.append(
            {
                "path": f"{pack}.rec#{key}",
                "identity": str(label),
                "split": "train",
                "source": source,
                **info,
            }
        )
    if not rows:
        raise DataError(f"{reader.rec_path}: no readable image records")
    return policy.stamp(finalize(rows))


# -- .bin verification packs ------------------------------------------------------------------

_PICKLE_GLOBALS = {
    ("_codecs", "encode"),  # protocol-2 pickles of bytes from python 3
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _PackUnpickler(pickle.Unpickler):
    """Loads only lists, tuples, bytes, bools and numpy arrays: a ``.bin`` is a pickle, and a
    pickle may otherwise run any code it names."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path):
    raw = path.read_bytes()
    try:
        return _PackUnpickler(io.BytesIO(raw)).load()
    except UnicodeDecodeError:  # a python 2 pickle of str JPEGs (eval/verification.py:load_bin)
        return _PackUnpickler(io.BytesIO(raw), encoding="bytes").load()


def read_bin(path: str | Path, size: int = 112) -> tuple[np.ndarray, pd.DataFrame]:
    """A verification ``.bin``: ``(images, pairs)``.

    ``images`` is ``(2P, size, size, 3)`` uint8 RGB (resized where stored at another size);
    ``pairs`` has ``a, b`` (image indices ``2i, 2i + 1``), ``same`` and ``fold``, the 10
    contiguous blocks of insightface's ``KFold(10, shuffle=False)`` (LFW's 10 sets for lfw.bin).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: verification pack missing")
    try:
        bins, issame = _load_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a (bins, issame) verification pickle ({exc})") from None
    if len(bins) != 2 * len(issame):
        raise DataError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
    images = np.empty((len(bins), size, size, 3), np.uint8)
    for i, encoded in enumerate(bins):
        buf = np.frombuffer(encoded, np.uint8) if isinstance(encoded, bytes) else encoded
        buf = np.ascontiguousarray(buf, np.uint8).ravel()
        if (problem := image_problem(buf.tobytes())) is not None:
            raise DataError(f"{path}: image {i}: {problem}")
        img = cv2.imdecode(np.ascontiguousarray(buf, np.uint8).ravel(), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{path}: image {i} does not decode (corrupt or truncated)")
        if img.shape[:2] != (size, size):
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        images[i] = img[:, :, ::-1]
    n = len(issame)
    fold = np.repeat(np.arange(10), [len(b) for b in np.array_split(np.arange(n), 10)])
    pairs = pd.DataFrame(
        {
            "a": np.arange(0, 2 * n, 2),
            "b": np.arange(1, 2 * n, 2),
            "same": np.asarray(issame, dtype=bool),
            "fold": fold.astype(np.int64),
        }
    )
    return images, pairs
