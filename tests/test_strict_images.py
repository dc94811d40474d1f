"""Strict decoding: a truncated JPEG/PNG, a PNG named .jpg and a huge image are errors naming the
file, found from the header and the end markers before any full decode; in the loaders, the
manifest and the GX suite."""

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from vlrface.data import casia
from vlrface.data.records import describe_bytes
from vlrface.data.synthetic import write_casia_layout
from vlrface.data.validation import DataValidationError, validate_manifest
from vlrface.errors import DataError
from vlrface.fileio import image_problem
from vlrface.preprocess import decode_rgb, load_rgb


@pytest.fixture
def faces(tmp_path):
    return write_casia_layout(tmp_path / "faces", 3, 2, seed=0, progress=False)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(side: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def huge_jpeg(side: int) -> bytes:
    sof = struct.pack(">BHHB", 8, side, side, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def test_half_a_jpeg_is_refused_everywhere(faces, tmp_path):
    img = faces / "0000003" / "002.jpg"
    raw = img.read_bytes()
    half = raw[: len(raw) // 2]
    # the fault is real: OpenCV alone decodes half a JPEG (grey bottom)
    assert cv2.imdecode(np.frombuffer(half, np.uint8), cv2.IMREAD_COLOR) is not None
    img.write_bytes(half)
    with pytest.raises(DataError, match=r"002\.jpg: truncated or corrupt JPEG \(no end-of-image"):
        load_rgb(img, 112)
    assert describe_bytes(half, "002.jpg")["decodable"] is False
    manifest = casia.read_manifest(faces, test_fraction=0.0, progress=False)
    assert not manifest.set_index("path").loc["0000003/002.jpg", "decodable"]
    with pytest.raises(DataValidationError, match=r"decodable.*0000003/002\.jpg"):
        validate_manifest(manifest, "faces", 112)
    skipped = casia.read_manifest(faces, test_fraction=0.0, progress=False, on_error="skip")
    assert "no end-of-image marker" in skipped.attrs["skipped_examples"][0]
    # a complete image with NUL padding after its end marker still passes
    assert image_problem(raw + b"\x00" * 16, "x.jpg") is None
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert image_problem(png.tobytes(), "x.png") is None
    assert "no IEND" in image_problem(png.tobytes()[:-20], "x.png")


def test_png_named_jpg_and_huge_images_fail_before_decoding(tmp_path):
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a.jpg").write_bytes(png.tobytes())
    with pytest.raises(DataError, match=r"a\.jpg: a PNG file named \.jpg \(expected JPEG\)"):
        load_rgb(tmp_path / "a.jpg")
    for name, raw in (("big.png", huge_png(20000)), ("big.jpg", huge_jpeg(20000))):
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"of 20000x20000 pixels exceeds the limit"):
            decode_rgb(raw, 112, name)
        assert time.perf_counter() - start < 0.5  # the header, not a 1.2 GB decode
        assert describe_bytes(raw, name)["decodable"] is False
    assert "corrupt JPEG" in image_problem(b"\xff\xd8\xff\xd9", "x.jpg")
    assert image_problem(b"", None) == "empty image"
