"""IJB template features and chunked template-pair scoring (docs/datasets.md, IJB).

Template feature, as insightface's ``eval_ijbc.py``/``ijb_evals.py`` build it:

1. per image ``f = emb(img) + emb(flip(img))``, no per-image L2 normalisation;
2. multiplied by the detector's faceness score;
3. images of one media (a video's frames, or a single still) averaged;
4. media vectors summed over the template, then the sum L2-normalised.

Steps 2-4 are one weighted sum: image ``i`` of media ``m`` weighs ``faceness_i / |m|``, so the
template feature is ``normalize(W @ f)`` with a sparse template-by-image ``W``.

1:1 scores are dot products of the two templates' features. ``score_template_pairs`` never holds
a pairs x dim array: pairs are bucketed by the block of rows their lower template index falls in,
each block's needed part of the Gram matrix is one float32 GEMM, and the scores are read from
it (half the Gram matrix at most, since ``s(a, b) = s(b, a)``).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def template_features(
    emb, templates, medias, faceness=None, emb_flip=None
) -> tuple[np.ndarray, np.ndarray]:
    """``(template_ids, features)``: sorted unique template ids and their L2-normalised features.

    ``emb``/``emb_flip``: per-image embeddings of the image and of its mirror image;
    ``templates``/``medias``: template and media id of each image; ``faceness``: detector
    score of each image (``None``: 1).
    """
    f = np.asarray(emb, np.float32)
    if emb_flip is not None:
        f = f + np.asarray(emb_flip, np.float32)
    templates, medias = np.asarray(templates), np.asarray(medias)
    n = len(f)
    if templates.shape != (n,) or medias.shape != (n,):
        raise ValueError(f"need one template and media id per image ({n})")
    w = np.ones(n) if faceness is None else np.asarray(faceness, np.float64)
    template_ids, t_idx = np.unique(templates, return_inverse=True)
    media_values, media_idx = np.unique(medias, return_inverse=True)
    _, m_idx, m_size = np.unique(  # one index per (template, media)
        t_idx.astype(np.int64) * len(media_values) + media_idx,
        return_inverse=True,
        return_counts=True,
    )
    w = (w / m_size[m_idx]).astype(np.float32)
    feats = np.asarray(sparse.csr_matrix((w, (t_idx, np.arange(n))), (len(template_ids), n)) @ f)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return template_ids, feats


def rows_of(template_ids: np.ndarray, wanted) -> np.ndarray:
    """Row of each ``wanted`` template id in the sorted ``template_ids``; raises if absent."""
    wanted = np.asarray(wanted)
    if template_ids.dtype.kind in "iu" and 0 <= template_ids[0] and template_ids[-1] < 2**26:
        table = np.full(int(template_ids[-1]) + 2, -1, np.int32)  # last slot: unknown ids
        table[template_ids] = np.arange(len(template_ids))
        rows = table[np.clip(wanted, -1, len(table) - 1)]
        missing = rows < 0
    else:
        rows = np.minimum(np.searchsorted(template_ids, wanted), len(template_ids) - 1)
        missing = template_ids[rows] != wanted
    if missing.any():
        raise KeyError(f"{int(missing.sum())} template ids unknown, e.g. {wanted[missing][:3]}")
    return rows


def score_template_pairs(template_ids, feats, t1, t2, block_rows: int = 512) -> np.ndarray:
    """Cosine score (float32) of each template pair ``(t1[i], t2[i])``, in pair order.

    ``template_ids``/``feats`` as ``template_features`` returns them.
    """
    feats = np.ascontiguousarray(feats, np.float32)
    a, b = rows_of(template_ids, t1), rows_of(template_ids, t2)
    lo, hi = np.minimum(a, b).astype(np.int32), np.maximum(a, b).astype(np.int32)
    del a, b
    block_rows = max(1, min(block_rows, (1 << 24) // len(feats)))  # <= 64 MiB of Gram matrix
    n_blocks = -(-len(feats) // block_rows)
    block = (lo // block_rows).astype(np.min_scalar_type(n_blocks))
    order = np.argsort(block, kind="stable")  # radix sort for 8/16-bit keys
    bounds = np.r_[0, np.cumsum(np.bincount(block, minlength=n_blocks))]
    del block
    scores = np.empty(len(lo), np.float32)
    needed = np.zeros(len(feats), bool)
    buf = np.empty(block_rows * len(feats), np.float32)
    for k in range(n_blocks):
        idx = order[bounds[k] : bounds[k + 1]]
        if not len(idx):
            continue
        r0 = k * block_rows
        rows, cols = lo[idx] - r0, hi[idx]
        needed[:] = False
        needed[cols] = True
        col_ids = np.flatnonzero(needed)
        col_pos = np.cumsum(needed, dtype=np.int32) - 1
        gram = buf[: min(block_rows, len(feats) - r0) * len(col_ids)]
        np.matmul(feats[r0 : r0 + block_rows], feats[col_ids].T, out=gram.reshape(-1, len(col_ids)))
        scores[idx] = gram[rows.astype(np.int64) * len(col_ids) + col_pos[cols]]
    return scores
