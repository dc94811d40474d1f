"""dmlc RecordIO (mxnet ``.rec`` + ``.idx``) without mxnet: reader, writer and ``IRHeader``.

Byte layout (docs/datasets.md, insightface packs; little-endian)::

    record := chunk+
    chunk  := magic u32 (0xCED7230A, on disk 0a 23 d7 ce) | lrec u32 | data[len] | 0-pad to 4
    lrec   := cflag << 29 | len      cflag 0 whole record, 1 first, 2 middle, 3 last part

The writer (dmlc ``RecordIOWriter::WriteRecord``) scans the record at 4-byte-aligned offsets and
splits it at every aligned copy of the magic word, dropping those 4 bytes; the reader puts them
back between chunks. Only the last chunk is padded. The ``.idx`` is text, one
``"<key>\\t<byte offset of the record's first chunk>\\n"`` line per record in write order
(``MXIndexedRecordIO.write_idx``). ``RecordWriter`` output is byte-identical to mxnet's.

An image record starts with an ``IRHeader``: ``<IfQQ`` = flag u32, label f32, id u64,
id2 u64 (24 bytes); ``flag > 0`` means a float32 label array of ``flag`` values follows the header
(and the header's label is 0), then the payload.

``IndexedRecordReader`` keeps the index as two sorted int64 numpy arrays (16 bytes a record: 80 MB
for MS1MV3's 5.2 M records) and opens the ``.rec`` lazily in each process (pid check), so a reader
made before ``fork`` (DataLoader workers) never shares a file position; reads use ``os.pread``.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from vlrface.errors import DataError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_IR = struct.Struct("<IfQQ")


class IRHeader(NamedTuple):
    """mxnet's image-record header; ``label`` is a float, or a float32 array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """``header`` + ``payload`` as one record (``mx.recordio.pack``): a scalar label gives flag 0,
    a sequence gives flag = its length, stored as float32 after the header."""
    flag, label, id_, id2 = header
    if np.ndim(label) == 0:
        return _IR.pack(0, float(label), id_, id2) + payload
    label = np.asarray(label, dtype=np.float32).ravel()
    return _IR.pack(label.size, 0.0, id_, id2) + label.tobytes() + payload


def unpack(record: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """``(IRHeader, payload)`` of one record (``mx.recordio.unpack``); ``DataError`` naming
    ``where`` if the record is shorter than its header says."""
    if len(record) < _IR.size:
        raise DataError(f"{where}: {len(record)} bytes, shorter than the 24-byte IRHeader")
    flag, label, id_, id2 = _IR.unpack_from(record)
    end = _IR.size + 4 * flag
    if len(record) < end:
        raise DataError(f"{where}: IRHeader flag {flag} needs {end} bytes, has {len(record)}")
    if flag > 0:
        label = np.frombuffer(record, np.float32, flag, _IR.size)
    return IRHeader(flag, label, id_, id2), record[end:]


def encode(record: bytes) -> bytes:
    """One record as its on-disk chunks, exactly as dmlc ``RecordIOWriter::WriteRecord``."""
    if len(record) > _LEN_MASK:
        raise ValueError(f"a RecordIO record holds at most {_LEN_MASK} bytes, got {len(record)}")
    chunks, start = [], 0
    for i in range(0, len(record) - len(record) % 4, 4):
        if record[i : i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            chunks.append(struct.pack("<II", MAGIC, cflag << 29 | i - start) + record[start:i])
            start = i + 4
    rest = len(record) - start
    chunks.append(struct.pack("<II", MAGIC, (3 if start else 0) << 29 | rest) + record[start:])
    return b"".join(chunks) + b"\0" * (-len(record) % 4)


class RecordWriter:
    """Write an indexed ``.rec`` + ``.idx`` pair (``mx.recordio.MXIndexedRecordIO(..., "w")``).

    ``with RecordWriter(rec) as w: w.write(key, pack(header, jpeg))``; the ``.idx`` defaults to
    the ``.rec`` path with suffix ``.idx``.
    """

    def __init__(self, rec: str | Path, idx: str | Path | None = None):
        self.rec_path = Path(rec)
        self.idx_path = Path(idx) if idx else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(self.idx_path, "w", newline="\n")  # noqa: SIM115

    def write(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode(record))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_index(idx: str | Path, rec_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A ``.idx`` as ``(keys, offsets)``: int64 arrays sorted by key.

    ``DataError`` naming the file and line for a garbled line (not ``<int>\\t<int>``), a last line
    without its newline (a truncated file), a duplicate key, or (given ``rec_size``) an offset at
    or past the end of the ``.rec``.
    """
    idx = Path(idx)
    if not idx.is_file():
        raise DataError(f"{idx}: RecordIO index missing")
    text = idx.read_bytes()
    lines = text.count(b"\n")
    if text and not text.endswith(b"\n"):
        raise DataError(f"{idx}:{lines + 1}: truncated (the last line has no newline)")
    try:
        table = pd.read_csv(
            io.BytesIO(text),
            sep="\t",
            header=None,
            names=["key", "offset"],
            dtype=np.int64,
            engine="c",
            skip_blank_lines=False,
            na_filter=False,
        )
    except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.EmptyDataError):
        table = None
    if table is None or len(table) != lines or (table.to_numpy() < 0).any():
        _raise_first_bad_line(idx, text)
    keys, offsets = table["key"].to_numpy(), table["offset"].to_numpy()
    if rec_size is not None and len(offsets) and (bad := np.flatnonzero(offsets >= rec_size)).size:
        line = int(bad[0]) + 1
        raise DataError(
            f"{idx}:{line}: offset {offsets[bad[0]]} is past the end of the .rec ({rec_size} bytes)"
        )
    order = np.argsort(keys, kind="stable")
    keys, offsets = keys[order], offsets[order]
    if (dup := np.flatnonzero(keys[1:] == keys[:-1])).size:
        line = int(order[dup[0] + 1]) + 1
        raise DataError(f"{idx}:{line}: key {keys[dup[0]]} appears twice")
    return keys, offsets


def _raise_first_bad_line(idx: Path, text: bytes) -> None:
    """The slow path of ``load_index``: find the first line that is not ``<int>\\t<int>``."""
    for n, line in enumerate(text.split(b"\n")[:-1], 1):
        fields = line.split(b"\t")
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise DataError(f"{idx}:{n}: expected '<key>\\t<offset>', got {line[:80]!r}")
    raise DataError(f"{idx}: a key or offset is out of the int64 range")


class IndexedRecordReader:
    """Random access to the records of a ``.rec`` through its ``.idx`` (default: same stem)."""

    def __init__(self, rec: str | Path, idx: str | Path | None = None):
        self._fd: int | None = None
        self._pid: int | None = None
        self.rec_path = Path(rec)
        if not self.rec_path.is_file():
            raise DataError(f"{self.rec_path}: RecordIO file missing")
        self.idx_path = Path(idx) if idx else self.rec_path.with_suffix(".idx")
        self.size = self.rec_path.stat().st_size
        self.keys, self.offsets = load_index(self.idx_path, self.size)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        i = np.searchsorted(self.keys, key)
        return bool(i < len(self.keys) and self.keys[i] == key)

    def offset(self, key: int) -> int:
        """Byte offset of record ``key``; ``DataError`` if the index lacks it."""
        i = np.searchsorted(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            raise DataError(f"{self.idx_path}: key {key} not in the index")
        return int(self.offsets[i])

    def read(self, key: int) -> bytes:
        """The record stored under ``key`` (its chunks joined, magic words restored)."""
        return self.read_at(self.offset(key))

    def read_at(self, offset: int) -> bytes:
        """The record whose first chunk starts at byte ``offset``."""
        fd, parts, pos, first = self._file(), [], offset, True
        while True:
            head = os.pread(fd, 8, pos)
            if len(head) < 8:
                raise DataError(
                    f"{self.rec_path}: truncated record at byte offset {pos} (file ends at "
                    f"{self.size}, a chunk header needs 8 bytes)"
                )
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DataError(
                    f"{self.rec_path}: bad magic 0x{magic:08x} at byte offset {pos} (expected "
                    f"0x{MAGIC:08x}; the .idx does not match the .rec, or the file is corrupt)"
                )
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if (cflag in (0, 1)) != first:
                raise DataError(
                    f"{self.rec_path}: chunk flag {cflag} at byte offset {pos} "
                    f"({'a record cannot start' if first else 'cannot continue a record'} here)"
                )
            data = os.pread(fd, length, pos + 8)
            if len(data) < length:
                raise DataError(
                    f"{self.rec_path}: truncated record at byte offset {offset} (chunk at {pos} "
                    f"holds {length} bytes, the file ends at {self.size})"
                )
            parts.append(data)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            pos, first = pos + 8 + length, False  # split chunks are 4-aligned: no padding

    def _file(self) -> int:
        if self._pid != os.getpid():  # first use in this process (or a fork of the opener)
            self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        self.close()
