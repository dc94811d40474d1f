"""Training-loader throughput against worker processes, and what a GPU node needs.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/loader_scaling.py [--workers 0 1 2]
        [--kind thread process] [--images 768] [--batch 64] [--epochs 2] [--copy | --no-copy]
        [--track keras | torch]

``--track keras`` (default): ``FaceBatches(workers=N, kind=K)`` (decode, VLR-degrade with
p=0.5, flip, normalise, stack); ``--track torch``: the PyTorch trainer's ``Batches.get`` (the
same work, NCHW tensors), inline or decoding in N threads (``loader_kind: thread``), or computed
ahead in N processes (``loader_kind: process``: ``SlotWorkers`` running ``Batches.fill``, views
of the slot, as the trainer takes them); over a synthetic 112 px CASIA-layout set; img/s is timed
over the epochs after a first, warm-up epoch (pool start-up excluded); the batches are checked
equal across worker counts and kinds. Keras process workers hand batches over as the Keras
training loop takes them: views of their shared-memory slot (``copy=False``, the default here);
``--copy`` times the copy-out mode. Prints
JSON: per kind, img/s per worker count and the speed-up of 2 workers over 1; img/s per core (the
best 1-worker figure), the load average before and after (on a shared machine the figures are
only as clean as the load), and the cores a GPU consumes at ``--gpu-img-s`` (default 1700 img/s:
see docs/scale-out.md for where that figure comes from).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time


def run(
    root, manifest, workers: int, batch: int, epochs: int, kind: str, copy: bool = False
) -> tuple[float, str]:
    from vlrface.data.loader import FaceBatches
    from vlrface.data.records import label_map
    from vlrface.degrade import VLRPolicy

    fb = FaceBatches(root, manifest, label_map(manifest), batch, seed=0,
                     vlr=VLRPolicy(probability=0.5), workers=workers, kind=kind,
                     copy=copy)  # fmt: skip
    digest = hashlib.sha256()
    try:
        for b in fb.epoch(0):  # warm-up: the pool starts, files enter the page cache
            for a in b:  # read before the next batch is asked for (the copy=False contract)
                digest.update(a.tobytes())
        t0 = time.perf_counter()
        n = 0
        for e in range(1, epochs + 1):
            for b in fb.epoch(e):
                n += len(b[1])
        return n / (time.perf_counter() - t0), digest.hexdigest()[:16]
    finally:
        fb.close()


def run_torch(
    root, manifest, workers: int, batch: int, epochs: int, kind: str, copy: bool = False
) -> tuple[float, str]:
    """``run`` for the PyTorch trainer's loader, as ``vlrface.training.torch.train`` drives it."""
    from vlrface.data.loader import SlotWorkers
    from vlrface.data.records import label_map
    from vlrface.degrade import VLRPolicy
    from vlrface.models.torch import Preprocessing
    from vlrface.training.torch import Batches, epoch_order

    spec = Preprocessing(112, "RGB", (127.5,) * 3, (128.0,) * 3)
    if copy:
        raise SystemExit("--copy: the PyTorch trainer takes views of the slots; time --track keras")
    threads = workers if kind == "thread" else 0
    batches = Batches(root, manifest, label_map(manifest), spec, 112, True, 0, workers=threads)
    policy, steps = VLRPolicy(probability=0.5), len(manifest) // batch

    def jobs(first: int, last: int):
        for e in range(first, last + 1):
            order = epoch_order(len(manifest), 0, e)
            for b in range(steps):
                yield order[b * batch : (b + 1) * batch], e, b, policy, False

    pool = SlotWorkers(batches, workers, method="fill") if kind == "process" and workers else None
    if pool is None:
        stream = (batches.get(*job)[0].numpy() for job in jobs(0, epochs))
    else:  # [epoch, batch], student, labels: views of the slot, as the trainer takes them
        nbytes = batches.nbytes(batch, False)
        stream = (b[1] for b in pool.stream(jobs(0, epochs), nbytes, copy=False))
    digest = hashlib.sha256()
    try:
        for _ in range(steps):  # warm-up epoch
            digest.update(next(stream).tobytes())
        t0 = time.perf_counter()
        n = 0
        for x in stream:
            n += len(x)
        return n / (time.perf_counter() - t0), digest.hexdigest()[:16]
    finally:
        if pool is not None:
            stream.close()
            pool.close()
        if batches.pool is not None:
            batches.pool.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=768)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--kind", choices=["thread", "process"], nargs="+", default=["thread", "process"]
    )
    p.add_argument(
        "--copy",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="process workers: copy each batch out of shared memory (default: hand over views "
        "of it, as the Keras training loop does)",
    )
    p.add_argument("--track", choices=["keras", "torch"], default="keras")
    p.add_argument("--gpu-img-s", type=float, default=1700.0)
    p.add_argument("--node-cores", type=int, default=8, help="CPU cores per GPU on the node")
    a = p.parse_args()
    from vlrface.data.manifest import build_manifest
    from vlrface.data.synthetic import write_casia_layout

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ids = 32
        write_casia_layout(tmp, ids, -(-a.images // ids), seed=0, progress=False)
        manifest = build_manifest("casia_webface", tmp, progress=False)
        rates, digests = {}, set()
        for kind in a.kind:
            for w in a.workers:
                if w == 0 and kind != a.kind[0]:
                    continue  # 0 workers: one prefetch thread whatever the kind
                if a.track == "torch":
                    rates[kind, w], d = run_torch(tmp, manifest, w, a.batch, a.epochs, kind, a.copy)
                else:
                    rates[kind, w], d = run(tmp, manifest, w, a.batch, a.epochs, kind, a.copy)
                digests.add(d)
                print(f"{kind} workers={w}: {rates[kind, w]:.1f} img/s", file=sys.stderr)
    out = {
        "track": a.track,
        "images": len(manifest),
        "batch": a.batch,
        "process_batches": "copied out of shared memory" if a.copy else "views of shared memory",
        "cpu_count": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "same_batches_for_every_worker_count_and_kind": len(digests) == 1,
    }
    for kind in a.kind:
        got = {w: r for (k, w), r in rates.items() if k == kind or w == 0}
        out[kind] = {"img_per_s": {str(w): round(r, 1) for w, r in sorted(got.items())}}
        if 1 in got and 2 in got:
            out[kind]["speedup_2_vs_1"] = round(got[2] / got[1], 2)
    ones = [r for (_, w), r in rates.items() if w == 1]
    if ones:
        per_core = max(ones)
        out["img_per_s_per_core"] = round(per_core, 1)
        out["gpu_img_per_s_assumed"] = a.gpu_img_s
        out["cores_to_feed_one_gpu"] = round(a.gpu_img_s / per_core, 1)
        out["node_cores_per_gpu"] = a.node_cores
        out["node_feeds_gpu"] = per_core * a.node_cores >= a.gpu_img_s
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
