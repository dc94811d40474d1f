"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def temporary_file(data: bytes, name: str) -> Iterator[Path]:
    """``data`` as the file ``name`` in a fresh temporary folder, removed on exit: a model held
    as bytes (a ZenML artifact, a conversion) for a tool that reads it from a path."""
    with tempfile.TemporaryDirectory(prefix="vlrface-") as tmp:
        path = Path(tmp, name)
        path.write_bytes(data)
        yield path


# --- strict image checks: read the header before any decode -----------------------------------

MAX_SIDE = 16384  # pixels on a side; a larger image is refused before it is decoded
MAX_PIXELS = 8192 * 8192
_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
# start-of-frame markers (not DHT C4, JPG C8, DAC CC), which carry the frame's size
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NAMES = {"jpeg": "JPEG", "png": "PNG"}
_SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame segment, or ``None``."""
    i, n = 2, len(raw)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            return None
        length = int.from_bytes(raw[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            return int.from_bytes(raw[i + 7 : i + 9], "big"), int.from_bytes(
                raw[i + 5 : i + 7], "big"
            )
        i += 2 + length
    return None


def image_problem(raw: bytes, name: str | Path | None = None) -> str | None:
    """What is wrong with encoded image bytes, read from their header and ends without decoding
    (``None``: nothing found; formats other than JPEG and PNG are left to the decoder).

    A JPEG must have a frame header and end with its end-of-image marker (``FF D9``; trailing
    NUL padding allowed), a PNG an ``IHDR`` and a final ``IEND`` chunk; neither may exceed
    ``MAX_SIDE`` pixels a side or ``MAX_PIXELS``; and a file named ``.jpg``/``.png`` must hold
    that format."""
    if not raw:
        return "empty image"
    if raw.startswith(_JPEG):
        fmt, size = "jpeg", _jpeg_size(raw)
        if size is None:
            return "corrupt JPEG (no frame header before the image data)"
    elif raw.startswith(_PNG):
        fmt = "png"
        if len(raw) < 33 or raw[12:16] != b"IHDR":
            return "corrupt PNG (no IHDR header)"
        size = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    else:
        return None
    expected = _SUFFIXES.get(Path(str(name)).suffix.lower()) if name is not None else None
    if expected is not None and expected != fmt:
        return f"a {_NAMES[fmt]} file named {Path(str(name)).suffix} (expected {_NAMES[expected]})"
    w, h = size
    if w <= 0 or h <= 0:
        return f"corrupt {_NAMES[fmt]} (frame size {w}x{h})"
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        return (
            f"{_NAMES[fmt]} of {w}x{h} pixels exceeds the limit ({MAX_SIDE} a side, "
            f"{MAX_PIXELS} in all); not decoded"
        )
    body = raw.rstrip(b"\x00")
    if fmt == "jpeg" and not body.endswith(b"\xff\xd9"):
        return "truncated or corrupt JPEG (no end-of-image marker)"
    if fmt == "png" and body[-8:-4] != b"IEND":
        return "truncated or corrupt PNG (no IEND chunk at the end)"
    return None


def check_image(raw: bytes, where: str | Path) -> None:
    """``DataError`` naming ``where`` if ``image_problem`` finds anything."""
    if (problem := image_problem(raw, where)) is not None:
        from vlrface.errors import DataError

        raise DataError(f"{where}: {problem}")


# --- text files: any bytes give the project's error naming the file and line -------------------


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The text of ``path``; ``DataError`` naming the file (and line) if it cannot be read, holds
    a NUL byte (binary or corrupt) or is not valid ``encoding``."""
    from vlrface.errors import DataError

    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path itself
        why = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"{path}: cannot read the file ({why})") from None
    if (nul := raw.find(b"\x00")) >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: NUL byte at offset {nul} (binary or corrupt file)")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start})"
        ) from None
