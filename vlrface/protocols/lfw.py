"""LFW 1:1 verification at very low resolution (docs/datasets.md, LFW).

Pairs and folds are the official View 2 ones (``pairs.txt``, 10 sets; ``lfw.read_pairs``), or
those of an aligned insightface ``lfw.bin`` (``bin=``; 10 contiguous folds). Accuracy is
insightface's 10-fold routine (threshold chosen on the 9 other folds, mean and std of the held-out
accuracies); TAR@FAR by the floor rule on all pairs (``verification.tar_at_far``).

Variants: ``hr_lr`` (first image of each pair at full resolution, the gallery; second degraded to
``r x r`` and back, the probe; BinaryFaceNet's ``lfw_{r}_hr2lr_interArea``) and ``lr_lr`` (both
degraded; ``lfw_{r}_lr2lr``). ``r >= size`` (112) is the HR-HR figure.

Alignment (``align``, ``common.face_loader``): the raw release ships no landmarks. With
``auto`` (default) or ``detector`` each face is found and aligned by the face detector
(``vlrface.align.DlibDetector`` unless a ``detector`` is given); with ``none``, or for a face the
detector misses (counted in ``artifacts["alignment"]``), the central ``center_crop`` share of the
250 px image (0.56: ~140 px, the LFW face box) is resized to ``size``, an approximation of the
aligned crop. ``lfw.bin`` faces are already aligned.
"""

from __future__ import annotations

import numpy as np

from vlrface.data import lfw as lfw_data
from vlrface.data.insightface import read_bin
from vlrface.protocols.common import SIZE, check_root, embed_at, exp_suffix, face_loader, name
from vlrface.protocols.verification import heldout_accuracies, tar_at_far

RESOLUTIONS = (7, 14, 21, 28, 56, 112)
VARIANTS = ("hr_lr", "lr_lr")


def run_lfw(
    embedder,
    root,
    *,
    resolutions=RESOLUTIONS,
    flip: bool = True,
    progress: bool = True,
    pairs=None,
    bin=None,  # noqa: A002 - the file is called lfw.bin
    far: float = 1e-3,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
    center_crop: float = 0.56,
    detector=None,
    variants=VARIANTS,
    align: str = "auto",
):
    """``(metrics, artifacts)``: ``eval.lfw.<hr_lr|lr_lr>.<r>.{acc, acc_std, tar_far_1e-3}``;
    artifacts ``scores`` (name prefix -> pair scores), ``same``, ``fold``."""
    if bin is not None:
        images, table = read_bin(bin, size)
        a, b = table["a"].to_numpy(), table["b"].to_numpy()

        def load(idx):
            return images[idx]

        n = len(images)
    else:
        root = check_root(root)
        table = lfw_data.read_pairs(root, pairs=pairs)
        paths, inverse = np.unique(
            np.r_[table["path_a"].to_numpy(), table["path_b"].to_numpy()], return_inverse=True
        )
        a, b = inverse[: len(table)], inverse[len(table) :]
        load = face_loader(
            root, list(paths), size, up, center_crop=center_crop, detector=detector, align=align
        )
        n = len(paths)
    same, fold = table["same"].to_numpy(bool), table["fold"].to_numpy()
    res = [None, *[int(r) for r in resolutions]]
    emb = embed_at(
        embedder, load, n, res, flip=flip, down=down, up=up, progress=progress, desc="eval lfw"
    )
    metrics, scores = {}, {}
    for variant in variants:
        for r in resolutions:
            gallery = emb[None] if variant == "hr_lr" else emb[r]
            s = (gallery[a] * emb[r][b]).sum(1)
            accs = heldout_accuracies(s, same, fold)
            key = name("lfw", variant, r, "")[:-1]
            scores[key] = s
            metrics[f"{key}.acc"] = float(accs.mean())
            metrics[f"{key}.acc_std"] = float(accs.std())
            metrics[f"{key}.tar_far_{exp_suffix(far)}"] = tar_at_far(s, same, far)
    alignment = getattr(load, "stats", {"align": "none (lfw.bin: aligned)", "landmarks": 0,
                                          "detector": 0, "fallback": 0, "none": n})  # fmt: skip
    return metrics, {"scores": scores, "same": same, "fold": fold, "alignment": alignment}
