"""1:N identification: closed-set CMC and mAP, SurvFace and IJB open-set TPIR@FPIR.

Features are L2-normalised here and compared by cosine similarity in float32 (on unit vectors
the same ranking as the Euclidean distance of the reference code). Similarities are computed
``chunk`` probes at a time, so a probes x gallery matrix never exists whole.

Closed set, **TinyFace devkit** (docs/datasets.md; also SCface rank-1 and IJB's
legacy closed set over G1 u G2): gallery = mates + distractors (any id no probe has, e.g.
-100); each probe ranks the whole gallery, ties kept in gallery order (MATLAB's stable sort).
CMC rank-k = share of probes with a mate in the first k; AP is Market-1501's ``compute_AP``,
trapezoids over the ranked list, which depends only on the positions of the mates:
hit ``i`` of ``m`` at position ``n`` (0-based) adds ``((i-1)/n + i/(n+1)) / (2m)``, with
``(i-1)/n := 1`` at ``n = 0``. A mate's position is the number of gallery scores above its own
(ties: before it in gallery order): one vectorised count per mate, no sort of the gallery.
SCface rank-1 per distance is ``closed_set_identification(p, g, pid, gid, ranks=(1,))["rank1"]``.

Open set, **SurvFace TPIR20@FPIR** (``open_set_identification.ipynb``): gallery
prototype = mean of an identity's gallery features, L2-normalised; a mated probe is detected
at threshold ``t`` if its mate is within the top ``rank`` prototypes and scores ``> t``; an
unmated probe is a false alarm if its best score is ``> t``. 1,000 thresholds from the lowest
top-``rank`` score of the mated probes (or lowest best unmated score) to the highest best
unmated score; TPIR@FPIR ``f`` is the DIR at the threshold whose FPIR is nearest ``f`` (lowest
threshold on a tie); AUC is the trapezoid area under DIR(FPIR). Top-``rank`` membership: fewer
than ``rank`` prototypes score strictly higher than the mate (the notebook's ``topk`` breaks
ties arbitrarily). The notebook remaps gallery and probe labels to 0..C-1 separately in
first-seen order, which agrees with matching by identity only when both lists meet the
identities in the same order; here probes are matched to prototypes by identity.

Open set, **IJB per gallery** (``ijb_evals.py:evaluation_1N``): probes whose subject is in
the gallery are mated; ``correct = mate score > best other-subject score``; non-mated probes'
best scores sorted descending give ``thresh(f) = s[max(floor(n f) - 1, 0)]``; TPIR(f) = share
of mated probes that are correct with a mate score ``> thresh(f)``; rank-k counts the
other-subject templates above the mate (IJB galleries hold one template per subject). Over G1
and G2: TPIR is the mean of the two, top-k is (hits in G1 + hits in G2) / number of probes.
"""

from __future__ import annotations

import numpy as np

from vlrface.protocols.metrics import auc

CLOSED_SET_RANKS = (1, 5, 10, 20, 50)
SURVFACE_FPIRS = (0.01, 0.1, 0.2, 0.3)
IJB_FPIRS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _chunks(probe: np.ndarray, gallery: np.ndarray, chunk: int):
    """``(start, probe[start:start+chunk] @ gallery.T)`` over all probes.

    The similarities of a chunk live in one reused buffer, valid until the next chunk.
    """
    buf = np.empty(min(chunk, len(probe)) * len(gallery), np.float32)
    for s in range(0, len(probe), chunk):
        p = probe[s : s + chunk]
        yield s, np.matmul(p, gallery.T, out=buf[: len(p) * len(gallery)].reshape(len(p), -1))


def mate_positions(probe, gallery, probe_ids, gallery_ids, chunk: int = 256):
    """``(probe_index, position)`` of every (probe, gallery mate): 0-based rank position.

    Sorted by probe, then position. Raises if a probe has no mate in the gallery.
    """
    probe, gallery = _unit(probe), _unit(gallery)
    probe_ids, gallery_ids = np.asarray(probe_ids), np.asarray(gallery_ids)
    by_id = np.argsort(gallery_ids, kind="stable")
    lo = np.searchsorted(gallery_ids[by_id], probe_ids, "left")
    hi = np.searchsorted(gallery_ids[by_id], probe_ids, "right")
    if (hi == lo).any():
        raise ValueError(f"{int((hi == lo).sum())} probes have no mate in the gallery")
    owner, position = np.repeat(np.arange(len(probe)), hi - lo), np.empty((hi - lo).sum(), int)
    k = 0
    for s, sim in _chunks(probe, gallery, chunk):
        for p, row in enumerate(sim, start=s):
            for j in by_id[lo[p] : hi[p]]:
                v = row[j]
                position[k] = np.count_nonzero(row[:j] >= v) + np.count_nonzero(row[j + 1 :] > v)
                k += 1
    order = np.lexsort((position, owner))
    return owner[order], position[order]


def cmc(probe_index, position, n_probes: int, ranks=CLOSED_SET_RANKS) -> dict:
    """``{"rank<k>"}``: share of probes with a mate within the first ``k``."""
    first = np.full(n_probes, np.iinfo(np.int64).max)
    np.minimum.at(first, probe_index, position)
    return {f"rank{k}": float(np.mean(first < k)) for k in ranks}


def average_precision(probe_index, position, n_probes: int) -> np.ndarray:
    """Per-probe AP of the TinyFace devkit's ``compute_AP`` (Market-1501, trapezoid rule).

    ``probe_index``/``position`` as ``mate_positions`` returns them (sorted by probe, position).
    """
    n_mates = np.bincount(probe_index, minlength=n_probes)
    start = np.cumsum(n_mates) - n_mates
    hit = np.arange(len(position)) - start[probe_index] + 1  # i: 1-based hit number
    n = position.astype(np.float64)
    before = np.where(position == 0, 1.0, (hit - 1) / np.maximum(n, 1))
    term = (before + hit / (n + 1)) / (2 * n_mates[probe_index])
    return np.bincount(probe_index, term, minlength=n_probes)


def closed_set_identification(
    probe, gallery, probe_ids, gallery_ids, ranks=CLOSED_SET_RANKS, chunk: int = 256
) -> dict:
    """``{"rank<k>", "mAP"}`` of the closed-set protocol (TinyFace devkit, SCface, IJB legacy)."""
    return closed_set_and_curve(probe, gallery, probe_ids, gallery_ids, ranks, 0, chunk)[0]


def closed_set_and_curve(
    probe, gallery, probe_ids, gallery_ids, ranks=CLOSED_SET_RANKS, max_rank: int = 50,
    chunk: int = 256,
) -> tuple[dict, np.ndarray]:  # fmt: skip
    """``closed_set_identification`` and the CMC curve (the identification rate at ranks
    ``1..min(max_rank, gallery size)``) from one ranking of the gallery."""
    owner, position = mate_positions(probe, gallery, probe_ids, gallery_ids, chunk)
    out = cmc(owner, position, len(probe), ranks)
    out["mAP"] = float(average_precision(owner, position, len(probe)).mean())
    curve = range(1, min(max_rank, len(gallery)) + 1)
    at = cmc(owner, position, len(probe), curve)
    return out, np.array([at[f"rank{k}"] for k in curve])


def identity_prototypes(gallery, gallery_ids) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, prototypes)``: sorted identities and the L2-normalised mean of their features
    (computed as the normalised sum)."""
    ids, inv, counts = np.unique(gallery_ids, return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    return ids, _unit(np.add.reduceat(np.asarray(gallery)[order], np.cumsum(counts) - counts))


def survface_open_set(
    gallery,
    gallery_ids,
    mated,
    mated_ids,
    unmated,
    rank: int = 20,
    fpirs=SURVFACE_FPIRS,
    n_thresholds: int = 1000,
    chunk: int = 4096,
) -> dict:
    """``{"tpir<rank>@fpir=<f>", "auc"}`` of SurvFace's open-set protocol (see module)."""
    ids, protos = identity_prototypes(gallery, gallery_ids)
    rank = min(rank, len(ids))
    mated, unmated = _unit(mated), _unit(unmated)
    mate = np.searchsorted(ids, mated_ids)
    if (ids[np.minimum(mate, len(ids) - 1)] != np.asarray(mated_ids)).any():
        raise ValueError("mated probes need an identity of the gallery")
    hit_score, kth_lowest = np.empty(len(mated)), np.inf
    for s, sim in _chunks(mated, protos, chunk):
        m = sim[np.arange(len(sim)), mate[s : s + chunk]]
        in_top = np.count_nonzero(sim > m[:, None], axis=1) < rank
        hit_score[s : s + len(sim)] = np.where(in_top, m, -np.inf)
        kth_lowest = min(kth_lowest, float(np.partition(sim, -rank, axis=1)[:, -rank].min()))
    best_unmated = np.concatenate([sim.max(1) for _, sim in _chunks(unmated, protos, chunk)])
    thresholds = np.linspace(min(kth_lowest, best_unmated.min()), best_unmated.max(), n_thresholds)
    dir_ = _share_above(hit_score, thresholds)
    fpir = _share_above(best_unmated, thresholds)
    out = {f"tpir{rank}@fpir={f:g}": float(dir_[np.argmin(np.abs(fpir - f))]) for f in fpirs}
    out["auc"] = auc(fpir, dir_)
    return out


def _share_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of ``values`` strictly above each threshold."""
    v = np.sort(values)
    return (len(v) - np.searchsorted(v, thresholds, side="right")) / len(v)


def ijb_open_set(probe, probe_ids, gallery, gallery_ids, fpirs=IJB_FPIRS, chunk: int = 4096):
    """One IJB gallery: ``{"n_probes", "top1"/"top5"/"top10" (hit counts), "tpir@fpir=<f>"}``."""
    probe, gallery = _unit(probe), _unit(gallery)
    probe_ids, gallery_ids = np.asarray(probe_ids), np.asarray(gallery_ids)
    mate = {}
    for j, g in enumerate(gallery_ids.tolist()):
        mate.setdefault(g, j)  # first gallery template of the subject
    mate_col = np.array([mate.get(p, -1) for p in probe_ids.tolist()])
    is_mated = mate_col >= 0
    pos, rank, correct, best_nonmated = [], [], [], []
    for s, sim in _chunks(probe, gallery, chunk):
        rows = slice(s, s + len(sim))
        best_nonmated.append(sim[~is_mated[rows]].max(1))
        sim = sim[is_mated[rows]]
        p = sim[np.arange(len(sim)), mate_col[rows][is_mated[rows]]]
        sim[gallery_ids[None, :] == probe_ids[rows][is_mated[rows], None]] = -np.inf  # others
        pos.append(p)
        rank.append(np.count_nonzero(sim > p[:, None], axis=1))
        correct.append(p > sim.max(1))
    pos, rank, correct = np.concatenate(pos), np.concatenate(rank), np.concatenate(correct)
    s_desc = np.sort(np.concatenate(best_nonmated))[::-1]
    if not len(s_desc) or not len(pos):
        raise ValueError("the IJB open set needs mated and non-mated probes")
    out = {"n_probes": len(probe)}
    out.update({f"top{k}": int(np.count_nonzero(rank < k)) for k in (1, 5, 10)})
    for f in fpirs:
        thresh = s_desc[max(int(len(s_desc) * f) - 1, 0)]
        out[f"tpir@fpir={f:g}"] = float(np.mean(correct & (pos > thresh)))
    return out


def ijb_identification(probe, probe_ids, galleries: dict, fpirs=IJB_FPIRS) -> dict:
    """IJB 1:N over ``galleries`` (``{"G1": (feats, subject_ids), "G2": ...}``).

    ``{"<G>.tpir@fpir=<f>", "tpir@fpir=<f>" (mean over galleries), "top<k>"}``.
    """
    per = {g: ijb_open_set(probe, probe_ids, f, i, fpirs) for g, (f, i) in galleries.items()}
    out = {}
    for g, r in per.items():
        out.update({f"{g}.tpir@fpir={f:g}": r[f"tpir@fpir={f:g}"] for f in fpirs})
    for f in fpirs:
        out[f"tpir@fpir={f:g}"] = float(np.mean([r[f"tpir@fpir={f:g}"] for r in per.values()]))
    for k in (1, 5, 10):
        out[f"top{k}"] = sum(r[f"top{k}"] for r in per.values()) / len(probe)
    return out
