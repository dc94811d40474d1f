"""SCface closed-set identification, frontal mugshot gallery (docs/datasets.md, SCface).

Variants: ``50_80`` (subjects 1-50 are for fine-tuning, the other 80 are gallery and probes; the
DCR split) and ``all130`` (all subjects, no fine-tuning). Faces are aligned with their 4 annotated
points (``scface_annotations.txt``; 4-point similarity to the ArcFace template) where the
annotation file gives them, else resized whole. Probes are cams 1-5 at each distance (1 far
4.20 m, 2 medium 2.60 m, 3 close 1.00 m); they are native LR, so the resolution slot of a name is
the distance: ``eval.scface.<variant>.d<D>.rank1``, ``eval.scface.<variant>.<camK>.rank1`` (over
the three distances) and ``eval.scface.<variant>.mean.rank1`` (mean over the distances, the DCR
criterion). ``resolutions`` adds probes further degraded to ``r x r``:
``eval.scface.<variant>.d<D>_r<r>.rank1``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlrface.data import scface as scface_data
from vlrface.protocols.common import SIZE, check_root, embed_at, face_loader
from vlrface.protocols.identification import closed_set_and_curve, closed_set_identification

VARIANTS = ("50_80", "all130")


def run_scface(
    embedder,
    root,
    *,
    resolutions=(),
    flip: bool = True,
    progress: bool = True,
    features=None,
    annotations=None,
    variants=VARIANTS,
    n_train: int = 50,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
    align: str = "auto",
):
    """``(metrics, artifacts)``; artifacts ``cmc`` (metric prefix -> closed-set result)."""
    root = check_root(root)
    manifest = scface_data.read_manifest(
        root, progress=False, features=features, annotations=annotations
    )
    protocols = {
        "50_80": scface_data.protocol_50_80(manifest, n_train),
        "all130": scface_data.protocol_all(manifest),
    }
    used = pd.concat(
        [p.gallery for v, p in protocols.items() if v in variants]
        + [d for v, p in protocols.items() if v in variants for d in p.probes.values()]
    ).drop_duplicates("path")
    paths = used["path"].tolist()
    marks = used["landmarks4"].tolist() if "landmarks4" in used else None
    load = face_loader(root, paths, size, up, landmarks=marks, align=align)
    res = [None, *[int(r) for r in resolutions]]
    emb = embed_at(
        embedder,
        load,
        len(paths),
        res,
        flip=flip,
        down=down,
        up=up,
        progress=progress,
        desc="eval scface",
    )
    row = {p: i for i, p in enumerate(paths)}
    metrics, cmc, curves = {}, {}, {}
    for variant in variants:
        proto = protocols[variant]
        g = np.array([row[p] for p in proto.gallery["path"]])
        gid = proto.gallery["identity"].to_numpy()
        ranks = []
        for d, probes in proto.probes.items():
            if probes.empty:
                continue
            p = np.array([row[x] for x in probes["path"]])
            pid = probes["identity"].to_numpy()
            for r in res:
                key = f"eval.scface.{variant}.d{d}" + ("" if r is None else f"_r{r}")
                out, curves[key] = closed_set_and_curve(emb[r][p], emb[None][g], pid, gid, (1, 5))
                cmc[key] = out
                metrics[f"{key}.rank1"] = out["rank1"]
                if r is None:
                    ranks.append(out["rank1"])
        probes = pd.concat(list(proto.probes.values()))
        for cam, part in probes.groupby("camera"):
            p = np.array([row[x] for x in part["path"]])
            out = closed_set_identification(
                emb[None][p], emb[None][g], part["identity"].to_numpy(), gid, ranks=(1,)
            )
            metrics[f"eval.scface.{variant}.{cam}.rank1"] = out["rank1"]
        if ranks:
            metrics[f"eval.scface.{variant}.mean.rank1"] = float(np.mean(ranks))
    return metrics, {"cmc": cmc, "cmc_curves": curves, "alignment": load.stats}
