"""QMUL-TinyFace closed-set identification with distractors, devkit rules (docs/datasets.md).

Gallery = ``Gallery_Match`` (in ``.mat`` order) + ``Gallery_Distractor`` (sorted name order, an
identity no probe has); every probe ranks the whole gallery; rank-1/5/10/20/50 and mAP
(Market-1501 ``compute_AP``). Faces are native LR and unaligned (the release has no landmarks):
each is resized to ``size`` (``up`` when enlarging). Names: ``eval.tinyface.devkit.native.*``;
``resolutions`` adds probes further degraded to ``r x r`` (gallery unchanged):
``eval.tinyface.devkit.<r>.*``.
"""

from __future__ import annotations

import numpy as np

from vlrface.data import tinyface as tinyface_data
from vlrface.protocols.common import SIZE, check_root, embed_at, face_loader
from vlrface.protocols.identification import CLOSED_SET_RANKS, closed_set_and_curve

DISTRACTOR_ID = "-100"


def run_tinyface(
    embedder,
    root,
    *,
    resolutions=(),
    flip: bool = True,
    progress: bool = True,
    probe_mat=None,
    gallery_mat=None,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
):
    """``(metrics, artifacts)``; artifacts ``cmc`` (metric prefix -> closed-set result)."""
    root = check_root(root)
    m = tinyface_data.read_manifest(
        root,
        progress=False,
        splits=("probe", "gallery", "distractor"),
        probe_mat=probe_mat,
        gallery_mat=gallery_mat,
    )
    m = m.sort_values(["split", "protocol_index"], ignore_index=True)
    probe = m[m["split"] == "probe"]
    gallery = m[m["split"].isin(("gallery", "distractor"))]
    gallery = gallery.sort_values("split", key=lambda s: s != "gallery", kind="stable")
    gid = np.where(gallery["split"] == "distractor", DISTRACTOR_ID, gallery["identity"])
    load = face_loader(root, m["path"].tolist(), size, up)
    res = [None, *[int(r) for r in resolutions]]
    emb = embed_at(
        embedder,
        load,
        len(m),
        res,
        flip=flip,
        down=down,
        up=up,
        progress=progress,
        desc="eval tinyface",
    )
    p, g = probe.index.to_numpy(), gallery.index.to_numpy()
    metrics, cmc, curves = {}, {}, {}
    for r in res:
        key = f"eval.tinyface.devkit.{'native' if r is None else r}"
        out, curves[key] = closed_set_and_curve(
            emb[r][p], emb[None][g], probe["identity"].to_numpy(), gid, CLOSED_SET_RANKS
        )
        cmc[key] = out
        metrics.update({f"{key}.{k}": float(v) for k, v in out.items()})
    return metrics, {"cmc": cmc, "cmc_curves": curves, "n_probes": len(p), "n_gallery": len(g)}
