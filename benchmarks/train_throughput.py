"""Training throughput on this CPU: the Keras/larq training step of three backbones, and the input
pipeline that feeds it.

    .venv/bin/python benchmarks/train_throughput.py [--batch 32] [--warm 2] [--steps 5]

* ``step``: ``vlrface.training.keras.build_step`` (the trainer's own compiled step: forward, ArcFace
  s = 16, backward, SGDW) of binaryfacenet (width 64), binaryfacenet_lce (default widths) and
  quicknet, 112x112 input, 128-d embedding, on one fixed random batch: ``--warm`` steps (the first
  traces the graph; its time is printed apart), then ``--steps`` timed steps -> images/s.
* ``input``: ``FaceBatches`` over synthetic 112x112 JPEG faces with the fine-tune VLR policy
  (p = 0.5, inter-area to 7/14/28/56 px and back) and flips, iterated alone (its one prefetch
  thread decoding the next batch) -> images/s, set against each model's step consumption.

Both share the machine's cores (TF's intra-op pool vs the loader's thread); the numbers are
wall-clock on whatever else is running (load average printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from vlrface._keras import tf
from vlrface.config.keras import ModelConfig
from vlrface.data.loader import FaceBatches
from vlrface.degrade import VLRPolicy
from vlrface.models.keras import build_model
from vlrface.training.keras import Stage, build_step, make_head, seed_everything

MODELS = ("binaryfacenet", "binaryfacenet_lce", "quicknet")
CLASSES = 100


def time_step(name: str, batch: int, warm: int, steps: int) -> dict:
    seed_everything(0)
    backbone = build_model(ModelConfig(name=name, embedding=128))
    stage = Stage(epochs=1, batch_size=batch)
    head = make_head(CLASSES, 128, stage)
    step, _, _ = build_step(backbone, head, stage, 0.01)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, 112, 112, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, CLASSES, batch).astype(np.int32))
    dummy = tf.zeros((batch, 1, 1, 1))
    t0 = time.perf_counter()
    float(step(x, y, dummy)[0])
    first = time.perf_counter() - t0
    for _ in range(warm - 1):
        float(step(x, y, dummy)[0])
    times = []
    for _ in tqdm(range(steps), desc=f"{name} steps", leave=False):
        t0 = time.perf_counter()
        float(step(x, y, dummy)[0])
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {
        "model": name,
        "params": backbone.count_params(),
        "first_step_s": first,
        "step_s_median": med,
        "images_per_s": batch / med,
    }


def time_input(batch: int, batches: int, seed: int = 0) -> dict:
    from vlrface.data.synthetic import write_casia_layout

    ids, per = 16, max(2, -(-batch * batches // 16))
    with tempfile.TemporaryDirectory() as tmp:
        write_casia_layout(tmp, identities=ids, images_per_identity=per, seed=seed, progress=False)
        paths = sorted(
            os.path.relpath(os.path.join(d, f), tmp)
            for d, _, files in os.walk(tmp)
            for f in files
            if f.endswith(".jpg")
        )
        manifest = pd.DataFrame({"path": paths, "identity": [p.split("/")[0] for p in paths]})
        labels = {i: k for k, i in enumerate(sorted(manifest.identity.unique()))}
        policy = VLRPolicy(0.5, (7, 14, 28, 56), "area", "area")
        loader = FaceBatches(tmp, manifest, labels, batch, seed, 112, True, policy)
        it = loader.epoch(0)
        next(it)  # the first batch has no prefetch behind it
        n, t0 = 0, time.perf_counter()
        for x, _ in tqdm(it, total=len(loader) - 1, desc="input batches", leave=False):
            n += len(x)
        dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warm", type=int, default=2, help="untimed steps, the first traces")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per model")
    ap.add_argument("--input-batches", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"CPU cores: {os.cpu_count()}, TF intra-op threads: "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    inp = time_input(args.batch, args.input_batches)
    rows = [time_step(m, args.batch, max(args.warm, 1), args.steps) for m in args.models]
    print(f"\ntraining step, batch {args.batch}, 112x112, median of {args.steps} timed steps")
    print(f"{'model':<20}{'params':>10}{'trace+1st s':>13}{'step s':>9}{'img/s':>9}"
          f"{'input/step':>12}")  # fmt: skip
    for r in rows:
        ratio = inp["images_per_s"] / r["images_per_s"]
        print(
            f"{r['model']:<20}{r['params']:>10,}{r['first_step_s']:>13.1f}"
            f"{r['step_s_median']:>9.2f}{r['images_per_s']:>9.1f}{ratio:>11.1f}x"
        )
    print(
        f"\ninput pipeline (FaceBatches, VLR p=0.5 area 7/14/28/56, flip; 1 prefetch thread): "
        f"{inp['images_per_s']:.1f} img/s over {inp['images']} images"
    )
    print("input/step > 1: the loader keeps up with the step (the step is the bottleneck).")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
