"""Throughput of the alignment stage (``vlrface.data.alignment.align_manifest``) on real photos.

    PYTHONPATH=. .venv/bin/python benchmarks/align_throughput.py \\
        [--root ../shared/data/celeba-1k/raw_casia_layout] [--identities 20] [--workers 1 2]

Reads a CASIA-WebFace-layout root of raw photos with the CASIA reader (default: CelebA-1k's
original loose ~200 px crops, ../shared, read in place, never copied into the repo), keeps its
first ``--identities`` identities, and aligns them with the face detector (dlib HOG +
iBUG-68 -> 5 points -> similarity warp to the ArcFace 112x112 template -> JPEG) into a fresh
temporary folder once per worker count. Prints, per worker count: images, faces written, photos
without a face, seconds and images per second (the pool's start-up included: ``spawn`` workers
import vlrface and build their own detector). ``nproc`` caps what more workers can give.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared/data/celeba-1k/raw_casia_layout"


def main() -> None:
    from vlrface.data.alignment import align_manifest
    from vlrface.data.casia import read_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="align-bench-") as tmp:
        manifest = read_manifest(args.root, progress=False)  # read in place, never copied
        keep = sorted(manifest.identity.unique())[: args.identities]
        manifest = manifest[manifest.identity.isin(keep)].reset_index(drop=True)
        rows = []
        for workers in args.workers:
            out = Path(tmp) / f"aligned-{workers}"
            start = time.perf_counter()
            _, report = align_manifest(
                manifest, args.root, out, mode="detector", workers=workers, progress=False
            )
            wall = time.perf_counter() - start
            rows.append(
                {
                    "workers": workers,
                    "images": report["images"],
                    "faces": report["written"],
                    "no_face": len(report["no_face"]),
                    "seconds": round(wall, 2),
                    "images_per_second": round(report["images"] / wall, 1),
                }
            )
            shutil.rmtree(out)
    info = {"root": str(args.root), "identities": len(keep), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({**info, "runs": rows}, indent=2))
        return
    print(f"{info['identities']} identities of {info['root']} ({info['cpus']} CPUs)")
    print("workers  images  faces  no_face  seconds  img/s")
    for r in rows:
        print(
            f"{r['workers']:>7}  {r['images']:>6}  {r['faces']:>5}  {r['no_face']:>7}  "
            f"{r['seconds']:>7}  {r['images_per_second']:>5}"
        )


if __name__ == "__main__":
    main()
