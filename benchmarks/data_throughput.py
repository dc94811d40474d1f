"""Data-path throughput on one core, and random access into a 5 M-record RecordIO index.

    .venv/bin/python benchmarks/data_throughput.py [--images 1000] [--records 5000000]

Part 1 times ``bytes -> decode -> RGB -> 5-point alignment -> VLR degrade`` (``degrade(img, r)``,
area down to ``r`` px and back to 112) per image, over the same synthetic 112x112 JPEGs stored as
a ``.rec`` pack and as a folder of files, pinned to one CPU with OpenCV single-threaded; then the
same without alignment (``degrade only``: insightface packs are stored aligned):

* ``naive PIL``: per file ``PIL.Image.open().convert("RGB")``, ``align.align_face`` (a
  least-squares fit per image) and ``degrade.degrade``;
* ``optimized``: alignment matrices fitted for all rows at once (closed-form 2-D similarity,
  checked equal to ``align.estimate_norm``), ``cv2.imdecode``, then ``warpAffine``/``resize``/
  ``cvtColor`` into reused buffers; the faces equal the naive ones up to JPEG decoder rounding
  (the max difference is printed);
* ``reduced``: as optimized, but the JPEG is decoded at 1/4 scale in the DCT domain
  (``IMREAD_REDUCED_COLOR_4``, 28 px, enough for ``r <= 28``) and warped at that scale: not the
  same pixels (mean abs difference to optimized printed).

Part 2 writes a real ``.rec`` with ``--records`` small records and its ``.idx`` (``key\\toffset``
lines), loads it with ``recordio.IndexedRecordReader`` (two int64 arrays) and with the
``{key: offset}`` dict of a plain-Python reader (docs/datasets.md, insightface packs), and
measures load time, resident memory, and RSS growth over many random reads (O(1) memory per
read: none).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vlrface.align import ARCFACE_TEMPLATE, align_face, estimate_norm
from vlrface.data import recordio
from vlrface.data.synthetic import render_face
from vlrface.degrade import degrade


def rss_mb() -> float:
    """Resident memory of this process (Linux ``/proc/self/statm``), MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_faces(n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """``n`` distinct JPEGs (shifted/rotated renders) and each one's 5 landmarks."""
    rng = np.random.default_rng(seed)
    jpegs, landmarks = [], []
    for i in range(n):
        face = render_face(seed, i // 5, i % 5)
        angle, scale = rng.uniform(-8, 8), rng.uniform(0.9, 1.05)
        matrix = cv2.getRotationMatrix2D((56 + rng.uniform(-3, 3), 56), angle, scale)
        warped = cv2.warpAffine(face, matrix, (112, 112), borderMode=cv2.BORDER_REFLECT)
        landmarks.append(ARCFACE_TEMPLATE @ matrix[:, :2].T + matrix[:, 2])
        jpegs.append(cv2.imencode(".jpg", warped[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    return [j.tobytes() for j in jpegs], np.stack(landmarks)


def fit_similarities(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(N, 2, 3)`` least-squares similarities mapping each ``src[i]`` (5x2) onto ``dst``."""
    sc = src - src.mean(axis=1, keepdims=True)
    dc = dst - dst.mean(axis=0)
    norm = (sc**2).sum(axis=(1, 2))
    a = (sc * dc).sum(axis=(1, 2)) / norm
    b = (sc[..., 0] * dc[:, 1] - sc[..., 1] * dc[:, 0]).sum(axis=1) / norm
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], 1)
    t = dst.mean(axis=0) - np.einsum("nij,nj->ni", linear, src.mean(axis=1))
    return np.concatenate([linear, t[..., None]], axis=2)


def naive(paths: list[Path], landmarks: np.ndarray | None, r: int) -> list[np.ndarray]:
    """Per file: PIL decode, ``align_face`` (unless ``landmarks`` is None), ``degrade``."""
    out = []
    for i, path in enumerate(paths):
        img = np.asarray(Image.open(path).convert("RGB"))
        out.append(degrade(img if landmarks is None else align_face(img, landmarks[i]), r))
    return out


class Optimized:
    """Decode, align (unless ``matrices`` is None) and degrade into reused buffers; ``scale`` 4
    decodes at 1/4 size in the DCT domain and aligns at that size."""

    def __init__(self, matrices: np.ndarray | None, r: int, scale: int = 1):
        self.r, self.side = r, 112 // scale
        self.matrices = None if matrices is None else matrices / [1, 1, scale]
        self.flag = {1: cv2.IMREAD_COLOR, 4: cv2.IMREAD_REDUCED_COLOR_4}[scale]
        self.aligned = np.empty((self.side, self.side, 3), np.uint8)
        self.small = np.empty((r, r, 3), np.uint8)
        self.up = np.empty((112, 112, 3), np.uint8)

    def __call__(self, i: int, raw) -> np.ndarray:
        face = cv2.imdecode(np.frombuffer(raw, np.uint8), self.flag)
        if self.matrices is not None:
            size = (self.side, self.side)
            face = cv2.warpAffine(face, self.matrices[i], size, dst=self.aligned, borderValue=0.0)
        cv2.resize(face, (self.r, self.r), dst=self.small, interpolation=cv2.INTER_AREA)
        cv2.resize(self.small, (112, 112), dst=self.up, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(self.up, cv2.COLOR_BGR2RGB)


def best_rates(fns: dict, n: int, repeats: int) -> dict[str, float]:
    """Images per second of each ``fns[name]()`` over ``n`` images: best of ``repeats`` rounds,
    the variants interleaved in each round so that load from other processes hits all alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: n / seconds for name, seconds in best.items()}


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(int) - y).max()) for x, y in zip(a, b, strict=True))


def _mean_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(a, b, strict=True)]))


def throughput(work: Path, n: int, r: int, repeats: int) -> list[tuple[str, float, str]]:
    jpegs, landmarks = make_faces(n)
    folder = work / "jpg"
    folder.mkdir()
    paths = []
    with recordio.RecordWriter(work / "train.rec") as writer:
        for i, jpeg in enumerate(jpegs):
            writer.write(i + 1, recordio.pack(recordio.IRHeader(0, [i // 5, 1.0], i + 1, 0), jpeg))
            paths.append(folder / f"{i:06d}.jpg")
            paths[-1].write_bytes(jpeg)
    matrices = fit_similarities(landmarks, ARCFACE_TEMPLATE)
    assert np.allclose(matrices, [estimate_norm(lm) for lm in landmarks], atol=1e-9)
    reader = recordio.IndexedRecordReader(work / "train.rec")

    def from_rec(step):
        return [step(i, recordio.unpack(reader.read(i + 1))[1]).copy() for i in range(n)]

    def from_files(step):
        return [step(i, np.fromfile(p, np.uint8)).copy() for i, p in enumerate(paths)]

    rows = []
    for mode, lms, mats in [("align+degrade", landmarks, matrices), ("degrade only", None, None)]:
        exact, reduced = Optimized(mats, r), Optimized(mats, r, scale=4)
        base, fast, approx = naive(paths, lms, r), from_files(exact), from_rec(reduced)
        rates = best_rates(
            {
                "naive PIL, JPEG folder": lambda lms=lms: naive(paths, lms, r),
                "optimized, JPEG folder": lambda exact=exact: from_files(exact),
                "optimized, .rec": lambda exact=exact: from_rec(exact),
                "reduced-DCT, .rec": lambda reduced=reduced: from_rec(reduced),
            },
            n,
            repeats,
        )
        reference = rates["naive PIL, JPEG folder"]
        for name, rate in rates.items():
            rows.append((f"{mode}: {name}", rate, f"images/s, {rate / reference:.2f}x naive"))
        rows.append((f"{mode}: max |naive - optimized|", _max_diff(base, fast), "uint8 levels"))
        rows.append((f"{mode}: mean |optimized - reduced|", _mean_diff(fast, approx), "levels/px"))
    return rows


def write_index_pack(work: Path, n: int) -> Path:
    """A real ``.rec`` of ``n`` 24-byte records (an ``IRHeader``, empty payload; 32 bytes on
    disk) and its ``.idx``, written with numpy (``RecordWriter`` would take minutes)."""
    rec = np.zeros(
        n,
        [
            ("magic", "<u4"),
            ("lrec", "<u4"),
            ("flag", "<u4"),
            ("label", "<f4"),
            ("id", "<u8"),
            ("id2", "<u8"),
        ],
    )
    rec["magic"], rec["lrec"], rec["id"] = recordio.MAGIC, 24, np.arange(n)
    rec["label"] = np.arange(n) % 93_431
    rec.tofile(work / "big.rec")
    with open(work / "big.idx", "w") as f:
        for start in range(0, n, 1_000_000):
            keys = range(start, min(start + 1_000_000, n))
            f.write("".join(f"{k}\t{32 * k}\n" for k in keys))
    return work / "big.rec"


def index_access(work: Path, n: int, reads: int) -> list[tuple[str, float, str]]:
    rec = write_index_pack(work, n)
    rows = []
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    reader = recordio.IndexedRecordReader(rec)
    load_s = time.perf_counter() - t
    gc.collect()
    held = rss_mb() - before
    rows.append(("index load (numpy arrays)", load_s, "s"))
    rows.append(("index RSS (numpy arrays)", held, f"MB, {held * 2**20 / n:.1f} B/record"))
    keys = np.random.default_rng(0).integers(0, n, reads)
    for k in keys[:1000]:  # warm up the page cache and the allocator
        reader.read(int(k))
    rss0 = rss_mb()
    t = time.perf_counter()
    for k in keys:
        head, _ = recordio.unpack(reader.read(int(k)))
        assert head.id == k
    rate = reads / (time.perf_counter() - t)
    grown = rss_mb() - rss0
    rows.append((f"{reads:,} random reads", rate, "records/s"))
    rows.append(("RSS growth over those reads", grown, f"MB ({grown * 2**20 / reads:.2f} B/read)"))
    del reader
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    with open(rec.with_suffix(".idx")) as f:  # the plain {key: offset} reading
        table = {int(k): int(v) for k, v in (line.split("\t") for line in f if line.strip())}
    rows.append(("index load (python dict)", time.perf_counter() - t, "s"))
    rows.append(("index RSS (python dict)", rss_mb() - before, f"MB for {len(table):,}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=14, help="VLR size r (<= 28)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--cpu", type=int, default=0, help="the one CPU to pin to")
    args = ap.parse_args()
    if not 1 <= args.resolution <= 28:
        ap.error("--resolution must be 1..28 (the reduced path decodes at 28 px)")
    os.sched_setaffinity(0, {args.cpu})
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="vlrface-bench-") as tmp:
        rows = throughput(Path(tmp), args.images, args.resolution, args.repeats)
        rows += index_access(Path(tmp), args.records, args.reads)
    print(
        f"decode + align + degrade(r={args.resolution}) of 112x112 JPEGs, 1 CPU; "
        f"{args.records:,}-record index"
    )
    print(f"{'measure':50} {'value':>12}  unit")
    for name, value, note in rows:
        print(f"{name:50} {value:12,.2f}  {note}")


if __name__ == "__main__":
    main()
