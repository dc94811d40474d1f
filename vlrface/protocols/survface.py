"""QMUL-SurvFace 1:1 verification and 1:N open-set identification (docs/datasets.md).

1:1 (variant ``verification``): the official positive/negative pair lists, L2 distance of
L2-normalised flip-summed features, TAR@FAR 30/10/1/0.1 % interpolated on the 0.2:0.001:2.0 grid,
AUC, and mean accuracy over the 10 class-block folds of ``fold_size`` (532) pairs per polarity
(a copy with fewer than ``2 * fold_size`` positives gets 10 folds of ``ceil(positives / 10)``;
the fold size used is the ``fold_size`` artifact).
1:N (variant ``open_set``): gallery prototypes per identity, mated and unmated probes,
TPIR20@FPIR 1/10/20/30 % and AUC (``identification.survface_open_set``). Faces are native LR
(no landmarks) resized to ``size``; ``resolutions`` adds probes (the second image of a pair, the
mated and unmated probes) further degraded to ``r x r``. Names:
``eval.survface.verification.<native|r>.{tar_far_3e-1, ..., auc, mean_acc}`` and
``eval.survface.open_set.<native|r>.{tpir20_fpir_1e-2, ..., auc}`` (the rank stays 20 in the
name when a small gallery caps it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlrface.data import survface as survface_data
from vlrface.protocols.common import SIZE, check_root, embed_at, exp_suffix, face_loader
from vlrface.protocols.identification import SURVFACE_FPIRS, survface_open_set
from vlrface.protocols.metrics import SURVFACE_FARS, survface_verification

VARIANTS = ("verification", "open_set")


def run_survface(
    embedder,
    root,
    *,
    resolutions=(),
    flip: bool = True,
    progress: bool = True,
    positive_mat=None,
    negative_mat=None,
    gallery_mat=None,
    mated_probe_mat=None,
    fold_size: int = survface_data.FOLD_SIZE,
    rank: int = 20,
    variants=VARIANTS,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
):
    """``(metrics, artifacts)``; artifacts ``scores`` (1:1 scores per name prefix), ``same``."""
    root = check_root(root)
    tables = []
    if "verification" in variants:
        pairs = survface_data.read_pairs(
            root, fold_size=fold_size, positive_mat=positive_mat, negative_mat=negative_mat
        )
        pairs = pairs.sort_values(["same", "index"], ascending=[False, True], ignore_index=True)
        n_pos = int(pairs["same"].sum())
        if n_pos < 2 * fold_size:  # a partial copy: 10 folds of what there is, not 1 of 532
            fold_size = max(1, -(-n_pos // 10))
        tables.append(pd.DataFrame({"path": np.r_[pairs["path_a"], pairs["path_b"]]}))
    if "open_set" in variants:
        m = survface_data.read_manifest(
            root,
            progress=False,
            splits=("gallery", "mated_probe", "unmated_probe"),
            gallery_mat=gallery_mat,
            mated_probe_mat=mated_probe_mat,
        ).sort_values(["split", "protocol_index"], ignore_index=True)
        tables.append(m[["path"]])
    paths = pd.concat(tables)["path"].drop_duplicates().tolist()
    row = {p: i for i, p in enumerate(paths)}
    res = [None, *[int(r) for r in resolutions]]
    emb = embed_at(
        embedder,
        face_loader(root, paths, size, up),
        len(paths),
        res,
        flip=flip,
        down=down,
        up=up,
        progress=progress,
        desc="eval survface",
    )
    metrics, scores, same = {}, {}, None
    for r in res:
        tag = "native" if r is None else r
        if "verification" in variants:
            a = np.array([row[p] for p in pairs["path_a"]])
            b = np.array([row[p] for p in pairs["path_b"]])
            same = pairs["same"].to_numpy(bool)
            s = (emb[None][a] * emb[r][b]).sum(1)
            key = f"eval.survface.verification.{tag}"
            scores[key] = s
            out = survface_verification(s, same, fold_size)
            for f in SURVFACE_FARS:
                metrics[f"{key}.tar_far_{exp_suffix(f)}"] = out[f"tar@far={f:g}"]
            metrics[f"{key}.auc"] = out["auc"]
            metrics[f"{key}.mean_acc"] = out["mean_acc"]
        if "open_set" in variants:
            idx = {
                s: np.array([row[p] for p in m.loc[m["split"] == s, "path"]])
                for s in ("gallery", "mated_probe", "unmated_probe")
            }
            ids = {s: m.loc[m["split"] == s, "identity"].to_numpy() for s in idx}
            out = survface_open_set(
                emb[None][idx["gallery"]],
                ids["gallery"],
                emb[r][idx["mated_probe"]],
                ids["mated_probe"],
                emb[r][idx["unmated_probe"]],
                rank=rank,
            )
            used = min(rank, len(np.unique(ids["gallery"])))
            key = f"eval.survface.open_set.{tag}"
            for f in SURVFACE_FPIRS:
                metrics[f"{key}.tpir{rank}_fpir_{exp_suffix(f)}"] = out[f"tpir{used}@fpir={f:g}"]
            metrics[f"{key}.auc"] = out["auc"]
    return metrics, {"scores": scores, "same": same, "fold_size": fold_size}
