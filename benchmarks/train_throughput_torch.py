"""Training throughput (images/s) of the torch backbones on this machine.

One training step as ``vlrface.training.torch.train`` takes it (forward, margin head,
cross-entropy, backward, decoupled-decay SGD step; with ``--teacher`` also the frozen teacher's
forward on the HR batch and the distillation term), on random input tensors at each model's
input size, so decoding is excluded (``--with-data`` adds decoding + degradation + preprocessing
of real faces from a data root, measured separately). Median over ``--steps`` steps after one
warm-up step; the fastest step is reported too (``images_per_s_best``): on a shared
machine it is the least disturbed one.

    python benchmarks/train_throughput_torch.py --threads 2
    python benchmarks/train_throughput_torch.py --models se_resnet50 --teacher --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from vlrface.config.common import HeadConfig
from vlrface.config.torch import TorchModelConfig
from vlrface.losses.torch.pairs import feature_distillation_loss
from vlrface.training.torch import (
    decoupled_step,
    descriptor_dim,
    freeze,
    make_head,
    make_model,
    seed_everything,
)


def bench(
    name: str, batch: int, steps: int, teacher: bool, input_size: int | None, classes: int
) -> dict:
    seed_everything(0)
    model = make_model(TorchModelConfig(name=name, input_size=input_size))
    size = model.preprocessing.input_size
    dim = descriptor_dim(model)
    head = make_head(HeadConfig(kind="arcface"), dim, classes)
    t_net = (
        freeze(make_model(TorchModelConfig(name=name, input_size=input_size))) if teacher else None
    )
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size) * 60
    y = torch.randint(0, classes, (batch,))
    model.train()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        emb = model(x)
        loss = F.cross_entropy(head(emb, y), y)
        if t_net is not None:
            with torch.no_grad():
                target = t_net(x)
            loss = loss + feature_distillation_loss(target, emb, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        decoupled_step(opt, 1e-3, 5e-4)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {
        "model": name,
        "input_size": size,
        "batch": batch,
        "teacher": teacher,
        "steps": steps,
        "step_s_median": step_s,
        "step_s_min": min(times),
        "images_per_s": batch / step_s,
        # on a shared machine the fastest step is the least disturbed one
        "images_per_s_best": batch / min(times),
    }


def bench_data(root: str, name: str, input_size: int | None, images: int) -> dict:
    """Decode + curriculum-free fixed degradation + preprocessing, images/s (one thread)."""
    import numpy as np

    from vlrface.data.manifest import build_manifest
    from vlrface.degrade import VLRPolicy
    from vlrface.training.torch import Batches

    manifest = build_manifest("casia_webface", root, progress=False).head(images)
    labels = {k: i for i, k in enumerate(sorted(manifest.identity.unique()))}
    model = make_model(TorchModelConfig(name=name, input_size=input_size))
    b = Batches(root, manifest, labels, model.preprocessing, 112, True, 0)
    t0 = time.perf_counter()
    b.get(np.arange(len(manifest)), 0, 0, VLRPolicy(0.5), teacher=True)
    return {"model": name, "data_images_per_s": len(manifest) / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["squeezefaceposenet", "se_resnet50"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--teacher", action="store_true", help="add the frozen teacher's forward")
    ap.add_argument("--input-size", type=int, default=None, help="override (default: paper's)")
    ap.add_argument("--classes", type=int, default=8631, help="head width (VGGFace2: 8631)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--with-data", default=None, help="a casia_webface-layout root")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    host = {
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    rows = [
        bench(m, args.batch, args.steps, args.teacher, args.input_size, args.classes)
        for m in args.models
    ]
    if args.with_data:
        rows += [bench_data(args.with_data, m, args.input_size, 128) for m in args.models]
    print(json.dumps({"host": host, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
