"""IJB-B / IJB-C 1:1 and 1:N at several resolutions, and the cross-resolution matrix.

Protocol facts: docs/datasets.md, IJB.

Faces: a pack's loose crops aligned with their 5 points; a NIST release's faces cropped to
their box (no landmarks there) and resized. Each face is degraded to ``r x r`` and back
(inter-area by default) and embedded with flip (``f(x) + f(flip x)``, no per-image
normalisation); template features weigh faces by faceness (pack) and average media, then sum
and normalise (``templates.template_features``).

Sides: in 1:1 ``template_a`` (the enrolment column) is the gallery side, ``template_b`` the probe
side; in 1:N the galleries (G1/G2, S1/S2) are the gallery side, ``probe_mixed`` the probes.
Variants: ``hr_lr`` (gallery at full resolution, probe at ``r``) and ``lr_lr`` (both at ``r``);
``full`` is the undegraded crop (``r >= size`` is the same). Metrics, per variant and resolution:
``tar_far_1e-6 .. tar_far_1e-1`` (nearest rule), ``auc``, ``eer``; ``rank1/5/10``, the closed
set over the union of the two galleries (legacy ``ijb_1n.py``: one mate per probe; probes
whose subject is in neither gallery are left out) and ``fnir_fpir_<f>`` (``1 - TPIR`` of the
open set, per gallery then averaged over the two, ``ijb_evals.py:evaluation_1N``).
The cross-resolution matrix (artifact ``cross_resolution``: ``resolutions``, and 2-D arrays
``tar_far_1e-3`` (the cross-resolution paper's Table 2 metric) and ``rank1``, row = probe
resolution, column = gallery resolution) holds every (probe, gallery) combination; its diagonal
is ``lr_lr`` and its ``full`` column is ``hr_lr``.
"""

from __future__ import annotations

import numpy as np

from vlrface.data import ijb as ijb_data
from vlrface.data.records import DataError
from vlrface.protocols.common import SIZE, check_root, embed_at, exp_suffix, face_loader, name
from vlrface.protocols.identification import closed_set_identification, ijb_identification
from vlrface.protocols.metrics import verification_1to1
from vlrface.protocols.templates import score_template_pairs, template_features

RESOLUTIONS = (8, 16, 24, 32, 64, 128)
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS = (1e-4, 1e-3, 1e-2, 1e-1)
MATRIX_FAR = 1e-3


def _cross_scores(tids, f_gallery, f_probe, a, b) -> np.ndarray:
    """Scores of pairs ``(a, b)``: ``a``'s feature from ``f_gallery``, ``b``'s from ``f_probe``."""
    if f_gallery is f_probe:
        return score_template_pairs(tids, f_gallery, a, b)
    offset = int(tids.max()) + 1
    ids = np.r_[tids, tids + offset]
    return score_template_pairs(ids, np.vstack([f_gallery, f_probe]), a, np.asarray(b) + offset)


def _one_n(protocols, tids, f_gallery, f_probe) -> dict:
    from vlrface.protocols.templates import rows_of

    galleries = {
        g: (f_gallery[rows_of(tids, t["template_id"].to_numpy())], t["subject_id"].to_numpy())
        for g, t in protocols.galleries.items()
    }
    probes = protocols.probes
    p = f_probe[rows_of(tids, probes["template_id"].to_numpy())]
    pid = probes["subject_id"].to_numpy()
    out = ijb_identification(p, pid, galleries, FPIRS)
    union = np.vstack([f for f, _ in galleries.values()])
    uid = np.concatenate([i for _, i in galleries.values()])
    mated = np.isin(pid, uid)
    closed = closed_set_identification(p[mated], union, pid[mated], uid, ranks=(1, 5, 10))
    out.update({f"closed_rank{k}": closed[f"rank{k}"] for k in (1, 5, 10)})
    return out


def run_ijb(
    embedder,
    root,
    *,
    dataset: str | None = None,
    resolutions=RESOLUTIONS,
    flip: bool = True,
    progress: bool = True,
    variants=("hr_lr", "lr_lr"),
    matrix: bool = True,
    faceness: bool = True,
    down: str = "area",
    up: str = "area",
    size: int = SIZE,
    align: str = "auto",
):
    """``(metrics, artifacts)``; artifacts ``cross_resolution``, ``scores``, ``labels``."""
    root = check_root(root)
    found, layout = ijb_data.locate(root)
    if dataset is not None and found != dataset:
        raise DataError(f"{root}: holds {found}, not {dataset}")
    faces = ijb_data.read_manifest(root, progress=False)
    protocols = ijb_data.read_protocols(root)
    marks = faces["landmarks"].tolist() if "landmarks" in faces else None
    boxes = faces["bbox"].tolist() if "bbox" in faces and marks is None else None
    if boxes is not None and align == "auto":
        align = "landmarks"  # a NIST frame's face is its box: a detector may find another one
    load = face_loader(
        root, faces["path"].tolist(), size, up, landmarks=marks, bboxes=boxes, align=align
    )
    res = [*[int(r) for r in resolutions], None]
    emb = embed_at(
        embedder,
        load,
        len(faces),
        res,
        flip=flip,
        down=down,
        up=up,
        normalise=False,
        progress=progress,
        desc=f"eval {found}",
    )
    weight = faces["faceness"].to_numpy() if faceness and "faceness" in faces else None
    feats = {}
    for r in res:
        tids, feats[r] = template_features(
            emb[r], faces["template_id"].to_numpy(), faces["media_id"].to_numpy(), weight
        )
    pairs = protocols.pairs
    a, b = pairs["template_a"].to_numpy(), pairs["template_b"].to_numpy()
    labels = pairs["label"].to_numpy().astype(bool)
    has_11 = len(pairs) and labels.any() and not labels.all()
    has_1n = bool(protocols.galleries) and len(protocols.probes)
    cache: dict = {}

    def evaluate(r_probe, r_gallery, keep_scores: bool = False) -> dict:
        """Metrics of one (probe, gallery) resolution pair; scores kept only for the variants
        (a matrix of IJB-C's 15.6M pairs would otherwise hold 60 MB per cell)."""
        if (r_probe, r_gallery) not in cache:
            out = {}
            if has_11:
                s = _cross_scores(tids, feats[r_gallery], feats[r_probe], a, b)
                if keep_scores:
                    out["scores"] = s
                v = verification_1to1(s, labels, FARS)
                out.update({f"tar_far_{exp_suffix(f)}": v[f"tar@far={f:g}"] for f in FARS})
                out.update(auc=v["auc"], eer=v["eer"])
            if has_1n:
                n = _one_n(protocols, tids, feats[r_gallery], feats[r_probe])
                out.update({f"rank{k}": float(n[f"closed_rank{k}"]) for k in (1, 5, 10)})
                for f in FPIRS:
                    out[f"fnir_fpir_{exp_suffix(f)}"] = 1.0 - n[f"tpir@fpir={f:g}"]
            cache[r_probe, r_gallery] = out
        return cache[r_probe, r_gallery]

    metrics, scores = {}, {}
    for variant in variants:
        for r in res:
            out = evaluate(r, None if variant == "hr_lr" else r, keep_scores=True)
            for k, v in out.items():
                if k == "scores":
                    scores[name(found, variant, r, "")[:-1]] = v
                else:
                    metrics[name(found, variant, r, k)] = float(v)
    artifacts = {"scores": scores, "labels": labels}
    if matrix:
        cross = {"resolutions": ["full" if r is None else r for r in res]}
        for metric in (f"tar_far_{exp_suffix(MATRIX_FAR)}", "rank1"):
            grid = np.full((len(res), len(res)), np.nan)
            for i, rp in enumerate(res):
                for j, rg in enumerate(res):
                    grid[i, j] = evaluate(rp, rg).get(metric, np.nan)
            cross[metric] = grid
        artifacts["cross_resolution"] = cross
    artifacts["alignment"] = load.stats
    return metrics, artifacts


def run_ijbb(embedder, root, **kwargs):
    return run_ijb(embedder, root, dataset="ijbb", **kwargs)


def run_ijbc(embedder, root, **kwargs):
    return run_ijb(embedder, root, dataset="ijbc", **kwargs)
