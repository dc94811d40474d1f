"""RecordIO reader/writer, insightface packs and .bin packs on tiny fixtures in the official
layout: writer bytes equal hand-computed bytes (docs/datasets.md), readers return the
fixture's ground truth, and each kind of damage is named (file, byte offset or line)."""

import hashlib
import json
import os
import pickle
import struct

import numpy as np
import pandas as pd
import pytest

from vlrface.data import insightface, recordio
from vlrface.data.fixtures.insightface import face_jpeg, write_bin, write_im2rec, write_pack
from vlrface.data.records import MANIFEST_COLUMNS, read_bytes
from vlrface.errors import DataError

MAGIC = bytes.fromhex("0a23d7ce")


def _chunk_flags(rec_path, offset) -> list[int]:
    """The cflags of the chunks of the record at ``offset``, read straight from the bytes."""
    data, flags = rec_path.read_bytes(), []
    while True:
        magic, lrec = struct.unpack_from("<II", data, offset)
        assert magic == recordio.MAGIC
        flags.append(lrec >> 29)
        if lrec >> 29 in (0, 3):
            return flags
        offset += 8 + (lrec & (1 << 29) - 1)


def _offset(root, key) -> int:
    for line in (root / "train.idx").read_text().splitlines():
        k, off = line.split("\t")
        if int(k) == key:
            return int(off)
    raise KeyError(key)


@pytest.fixture
def pack(tmp_path):
    root = tmp_path / "ms1m-retinaface-t1"
    return root, write_pack(root)


# -- the container --------------------------------------------------------------------------


def test_header_bytes_match_the_notes_example(tmp_path):
    """An mxnet-written face2rec2 image record (key 1, label [0, 1], 17-byte payload)."""
    payload = b"\xff\xd8" + bytes(range(15))
    record = recordio.pack(recordio.IRHeader(0, [0.0, 1.0], 1, 0), payload)
    # magic, lrec 49 (cflag 0), flag 2, header label 0.0, id 1, id2 0, label array [0.0, 1.0]
    expected = bytes.fromhex(
        "0a23d7ce 31000000 02000000 00000000 0100000000000000 0000000000000000"
    )
    expected += bytes.fromhex("00000000 0000803f")
    assert recordio.encode(record) == expected + payload + b"\0" * 3
    with recordio.RecordWriter(tmp_path / "t.rec") as w:
        w.write(1, record)
        w.write(2, record)
        w.write(0, recordio.pack(recordio.IRHeader(0, [4, 6], 0, 0), b""))
    assert (tmp_path / "t.idx").read_bytes() == b"1\t0\n2\t60\n0\t120\n"
    head, rest = recordio.unpack(recordio.IndexedRecordReader(tmp_path / "t.rec").read(0))
    assert head.flag == 2 and head.label.tolist() == [4.0, 6.0] and rest == b""


@pytest.mark.parametrize(
    "record, chunks",
    [
        # magic at aligned offset 4: first (cflag 1, 4 bytes) and last (cflag 3, 4 bytes) chunk
        (b"abcd" + MAGIC + b"efgh", "0a23d7ce 04000020 61626364 0a23d7ce 04000060 65666768"),
        # two aligned magics back to back: empty first and middle chunks, then the last part
        (MAGIC + MAGIC + b"xy", "0a23d7ce 00000020 0a23d7ce 00000040 0a23d7ce 02000060 7879 0000"),
        # unaligned magic (offset 1) and a magic in the unaligned tail are data, not separators
        (b"a" + MAGIC + b"bcd", "0a23d7ce 08000000 610a23d7 ce626364"),
        (b"abcde" + MAGIC[:3], "0a23d7ce 08000000 61626364 650a23d7"),
        (b"", "0a23d7ce 00000000"),
    ],
)
def test_encode_splits_on_aligned_magic_words(tmp_path, record, chunks):
    assert recordio.encode(record) == bytes.fromhex(chunks)
    with recordio.RecordWriter(tmp_path / "t.rec") as w:
        w.write(7, b"lead")  # so the record of interest is not at offset 0
        w.write(3, record)
    reader = recordio.IndexedRecordReader(tmp_path / "t.rec")
    assert reader.read(3) == record and reader.read(7) == b"lead"
    assert reader.keys.tolist() == [3, 7] and reader.offset(3) == 12


def test_irheader_pack_unpack():
    scalar = recordio.pack(recordio.IRHeader(9, 3.0, 5, 6), b"jpg")
    assert scalar == struct.pack("<IfQQ", 0, 3.0, 5, 6) + b"jpg"  # flag forced to 0
    head, payload = recordio.unpack(scalar)
    assert head == (0, 3.0, 5, 6) and payload == b"jpg"
    array = recordio.pack(recordio.IRHeader(0, [7, 1], 5, 0), b"jpg")
    head, payload = recordio.unpack(array)
    assert head.flag == 2 and head.label.dtype == np.float32 and head.label.tolist() == [7, 1]
    assert payload == b"jpg" and len(array) == 24 + 8 + 3
    with pytest.raises(DataError, match=r"x#1: IRHeader flag 2 needs 32 bytes, has 30"):
        recordio.unpack(array[:30], "x#1")
    with pytest.raises(DataError, match="shorter than the 24-byte IRHeader"):
        recordio.unpack(array[:10])


def test_reader_reopens_the_rec_after_fork(pack):
    root, truth = pack
    reader = recordio.IndexedRecordReader(root / "train.rec")
    parent = reader.read(2)
    parent_fd = reader._fd
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: same reader object, must open its own file
        try:
            child = reader.read(2)
            os.write(w, json.dumps([child == parent, reader._fd != parent_fd]).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert json.loads(os.read(r, 100)) == [True, True]
    assert reader.read(2) == parent and reader._fd == parent_fd
    clone = pickle.loads(pickle.dumps(reader))  # no handle travels with it
    assert clone._fd is None and clone.read(2) == parent


# -- insightface packs ----------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["array", "scalar"])
def test_pack_manifest_equals_the_fixture(tmp_path, labels):
    root = tmp_path / "faces_webface_112x112"
    truth = write_pack(root, labels=labels)
    df = insightface.read_manifest(root, progress=False)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    pd.testing.assert_frame_equal(df[list(truth.columns)], truth, check_dtype=False)
    assert set(df["source"]) == {"casia_webface_pack"} and df.attrs["skipped"] == 0
    assert len(df) == 9 and sorted(df["identity"].unique()) == ["0", "1", "2"]
    reader = recordio.IndexedRecordReader(root / "train.rec")
    assert insightface.read_layout(reader)[1].tolist() == [[1, 4], [4, 6], [6, 10]]
    keys = [int(line.split("\t")[0]) for line in (root / "train.idx").read_text().splitlines()]
    assert keys == [*range(1, 10), 0, 10, 11, 12]  # face2rec2 order: images, header, identities


def test_magic_record_is_split_and_read_back(pack):
    root, truth = pack
    assert _chunk_flags(root / "train.rec", _offset(root, 2)) == [1, 2, 3]
    assert _chunk_flags(root / "train.rec", _offset(root, 3)) == [0]
    raw = read_bytes(root, "train.rec#2")
    assert raw.count(MAGIC) == 2 and raw[:2] == b"\xff\xd8"
    assert hashlib.sha256(raw).hexdigest() == truth.set_index("path").loc["train.rec#2", "sha256"]


def test_im2rec_file_without_header(tmp_path):
    root = tmp_path / "im2rec"
    truth = write_im2rec(root)
    lines = (root / "train.idx").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in lines] != sorted(range(5))  # shuffled keys
    df = insightface.read_manifest(root, source="plain", progress=False)
    pd.testing.assert_frame_equal(df[list(truth.columns)], truth, check_dtype=False)
    assert "train.rec#0" in set(df["path"]) and set(df["source"]) == {"plain"}


def test_property_first_line_only(pack, tmp_path):
    root, _ = pack
    assert (root / "property").read_text() == "3,112,112\n9\n"
    assert insightface.read_property(root / "property") == (3, 112, 112)
    (root / "property").write_text("4,112,112\n")
    with pytest.raises(DataError, match=r"property: 4 classes, the header record lists 3"):
        insightface.read_manifest(root, progress=False)
    (root / "property").write_text("112x112\n")
    with pytest.raises(DataError, match=r"property:1: expected 'num_classes,H,W'"):
        insightface.read_property(root / "property")


def test_read_bytes_file_pack_and_escape(pack, tmp_path):
    root, _ = pack
    (root / "a.jpg").write_bytes(b"jpeg")
    assert read_bytes(root, "a.jpg") == b"jpeg"
    assert read_bytes(root, "train.rec#1")[:2] == b"\xff\xd8"
    with pytest.raises(DataError, match=r"path '../x.rec' escapes the dataset root"):
        read_bytes(root, "../x.rec#1")
    with pytest.raises(DataError, match=r"escapes the dataset root"):
        read_bytes(root, "../../etc/passwd")
    with pytest.raises(DataError, match=r"train.idx: key 99 not in the index"):
        read_bytes(root, "train.rec#99")
    with pytest.raises(DataError, match=r"b.jpg: image file missing"):
        read_bytes(root, "b.jpg")


# -- bad input --------------------------------------------------------------------------------


def test_truncated_rec(tmp_path):
    root = tmp_path / "im2rec"
    write_im2rec(root)
    rec = root / "train.rec"
    last = max(_offset(root, k) for k in range(5))
    rec.write_bytes(rec.read_bytes()[: last + 100])
    with pytest.raises(DataError, match=rf"train.rec: truncated record at byte offset {last}"):
        insightface.read_manifest(root, progress=False)
    df = insightface.read_manifest(root, on_error="skip", progress=False)
    assert len(df) == 4 and df.attrs["skipped"] == 1
    rec.write_bytes(rec.read_bytes()[:last])  # the index now points past the end
    with pytest.raises(DataError, match=rf"train.idx:\d: offset {last} is past the end"):
        insightface.read_manifest(root, progress=False)


def test_truncated_pack_tail_is_fatal(pack):
    """face2rec2 writes the header and identity records last: a cut tail loses them."""
    root, _ = pack
    rec = root / "train.rec"
    rec.write_bytes(rec.read_bytes()[: _offset(root, 0) + 20])
    with pytest.raises(DataError, match=r"train.idx:11: offset \d+ is past the end of the .rec"):
        insightface.read_manifest(root, on_error="skip", progress=False)


def test_bad_magic_names_the_offset(pack):
    root, _ = pack
    off = _offset(root, 5)
    data = bytearray((root / "train.rec").read_bytes())
    data[off : off + 4] = b"\0\0\0\0"
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"train.rec: bad magic 0x00000000 at byte offset {off}"):
        insightface.read_manifest(root, progress=False)
    df = insightface.read_manifest(root, on_error="skip", progress=False)
    assert df.attrs["skipped"] == 1 and "train.rec#5" not in set(df["path"])


def test_idx_pointing_mid_record(pack):
    root, _ = pack
    idx = root / "train.idx"
    inner = _offset(root, 2) + 8 + 40  # the second chunk of the split record 2
    assert (root / "train.rec").read_bytes()[inner : inner + 4] == MAGIC
    idx.write_text(idx.read_text().replace(f"2\t{_offset(root, 2)}\n", f"2\t{inner}\n"))
    with pytest.raises(DataError, match=rf"chunk flag 2 at byte offset {inner}"):
        insightface.read_manifest(root, progress=False)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda lines: lines[:2] + ["3\tabc"] + lines[3:],
            r"train.idx:3: expected '<key>\\t<offset>'",
        ),
        (lambda lines: lines[:4] + ["5 120"] + lines[5:], r"train.idx:5: expected"),
        (lambda lines: lines[:1] + ["", *lines[1:]], r"train.idx:2: expected"),
        (lambda lines: lines[:6] + ["-7\t0"] + lines[7:], r"train.idx:7: expected"),
        (lambda lines: lines + ["1\t0"], r"train.idx:14: key 1 appears twice"),
    ],
)
def test_garbled_idx_names_the_line(pack, edit, message):
    root, _ = pack
    idx = root / "train.idx"
    idx.write_text("\n".join(edit(idx.read_text().splitlines())) + "\n")
    with pytest.raises(DataError, match=message):
        insightface.read_manifest(root, progress=False)


def test_truncated_idx_and_missing_key(pack):
    root, _ = pack
    idx = root / "train.idx"
    text = idx.read_text()
    idx.write_text(text[:-3])
    with pytest.raises(DataError, match=r"train.idx:13: truncated \(the last line has no newline"):
        insightface.read_manifest(root, progress=False)
    idx.write_text("".join(line for line in text.splitlines(True) if not line.startswith("4\t")))
    with pytest.raises(DataError, match=r"train.idx: key 4 not in the index"):
        insightface.read_manifest(root, progress=False)
    df = insightface.read_manifest(root, on_error="skip", progress=False)
    assert len(df) == 8 and df.attrs["skipped"] == 1
    idx.unlink()
    with pytest.raises(DataError, match=r"train.idx: RecordIO index missing"):
        insightface.read_manifest(root, progress=False)


def test_corrupt_jpeg_payload_raise_or_skip(pack):
    root, truth = pack
    soi = _offset(root, 7) + 8 + 32  # chunk header, IRHeader, [label, aligned] -> the JPEG
    data = bytearray((root / "train.rec").read_bytes())
    assert data[soi : soi + 2] == b"\xff\xd8"
    data[soi : soi + 64] = bytes(64)
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train.rec#7: image does not decode"):
        insightface.read_manifest(root, progress=False)
    df = insightface.read_manifest(root, on_error="skip", progress=False)
    assert df.attrs["skipped"] == 1
    assert "train.rec#7: image does not decode" in df.attrs["skipped_examples"][0]
    assert set(df["path"]) == set(truth["path"]) - {"train.rec#7"}


def test_class_outside_its_identity_range(tmp_path):
    root = tmp_path / "pack"
    root.mkdir()
    jpeg = face_jpeg(0, 0, 0)
    with recordio.RecordWriter(root / "train.rec") as w:
        w.write(1, recordio.pack(recordio.IRHeader(0, [0, 1], 1, 0), jpeg))
        w.write(2, recordio.pack(recordio.IRHeader(0, [0, 1], 2, 0), jpeg))  # range says class 1
        w.write(0, recordio.pack(recordio.IRHeader(0, [3, 5], 0, 0), b""))
        w.write(3, recordio.pack(recordio.IRHeader(0, [1, 2], 3, 0), b""))
        w.write(4, recordio.pack(recordio.IRHeader(0, [2, 3], 4, 0), b""))
    with pytest.raises(DataError, match=r"train.rec#2: class 0 disagrees with the identity"):
        insightface.read_manifest(root, progress=False)


# -- .bin verification packs ------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bytes", "ndarray", "py2"])
def test_bin_pack(tmp_path, variant):
    images, issame = write_bin(tmp_path / "lfw.bin", variant=variant)
    got, pairs = insightface.read_bin(tmp_path / "lfw.bin")
    assert got.shape == (40, 112, 112, 3) and np.array_equal(got, images)
    assert pairs["same"].tolist() == issame.tolist()
    assert pairs["fold"].tolist() == [f for f in range(10) for _ in range(2)]
    assert pairs[["a", "b"]].iloc[3].tolist() == [6, 7]
    if variant == "py2":
        with pytest.raises(UnicodeDecodeError):
            pickle.loads((tmp_path / "lfw.bin").read_bytes())  # hence the encoding fallback


def test_bad_bin_packs(tmp_path):
    with pytest.raises(DataError, match=r"nope.bin: verification pack missing"):
        insightface.read_bin(tmp_path / "nope.bin")
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps((os.system, ["echo"])))
    with pytest.raises(DataError, match=r"evil.bin: .*refusing to load posix.system"):
        insightface.read_bin(evil)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True]), protocol=2))
    with pytest.raises(DataError, match=r"odd.bin: 3 images for 1 pairs"):
        insightface.read_bin(odd)
    broken = tmp_path / "broken.bin"
    broken.write_bytes(pickle.dumps(([b"\xff\xd8junk", b"x"], [True]), protocol=2))
    with pytest.raises(DataError, match=r"broken.bin: image 0 does not decode"):
        insightface.read_bin(broken)
