"""Octuplet loss and feature distillation for PyTorch (torch ops).

The same math and parameter names as ``vlrface.losses.keras.pairs``; see its docstring for the
papers, the released-code facts and the variants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("euclidean", "euclidean_squared", "cosine")


def pairwise_distances(embeddings, metric: str = "euclidean"):
    e = embeddings.float()
    if metric == "cosine":
        n = F.normalize(e, dim=1)
        return 1.0 - n @ n.T
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    dot = e @ e.T
    sq = torch.diagonal(dot)
    d2 = (sq[:, None] - 2.0 * dot + sq[None, :]).clamp_min(0.0)
    if metric == "euclidean_squared":
        return d2
    zero = (d2 == 0.0).float()
    return torch.sqrt(d2 + zero * 1e-16) * (1.0 - zero)


def batch_hard_triplet(distances, pos, neg, margin: float):
    hardest_pos = (distances * pos).amax(dim=1)
    shift = (distances * neg).amax(dim=1, keepdim=True) * (1.0 - neg)
    hardest_neg = (distances + shift).amin(dim=1)
    return (hardest_pos - hardest_neg + margin).clamp_min(0.0)


def octuplet_loss(
    embeddings, labels, margin: float = 0.5, metric: str = "euclidean", terms=(1, 1, 1, 1)
):
    """Octuplet loss of ``[HR_1..B; LR_1..B]`` embeddings with labels ``(B,)``."""
    b = labels.shape[0]
    if embeddings.shape[0] != 2 * b:
        raise ValueError(f"octuplet loss needs 2B = {2 * b} embeddings, got {embeddings.shape[0]}")
    if len(terms) != 4:
        raise ValueError(f"terms weighs HR:HR, HR:LR, LR:HR, LR:LR: 4 values, got {terms}")
    d = pairwise_distances(embeddings, metric)
    same = (labels[:, None] == labels[None, :]).float()
    pos = same * (1.0 - torch.eye(b, device=same.device))
    neg = 1.0 - same
    blocks = (d[:b, :b], d[:b, b:], d[b:, :b], d[b:, b:])  # HR:HR, HR:LR, LR:HR, LR:LR
    total = sum(
        float(w) * batch_hard_triplet(x, pos, neg, margin)
        for w, x in zip(terms, blocks, strict=True)
    )
    return total.mean()


def feature_distillation_loss(
    teacher, student, lam: float = 0.1, reduction: str = "mean", distance: str = "mse"
):
    """As ``vlrface.losses.keras.pairs.feature_distillation_loss`` (``distance`` mse/cosine)."""
    if distance not in ("mse", "cosine"):
        raise ValueError(f"unknown distance {distance!r}; choose one of ['mse', 'cosine']")
    s, t = student.float(), teacher.float().detach()
    if distance == "cosine":
        nrm = torch.nn.functional.normalize
        sq = ((nrm(s, dim=1) - nrm(t, dim=1)) ** 2).sum(1)
    else:
        sq = (s - t) ** 2
    if reduction == "mean":
        return lam * sq.mean()
    if reduction == "sum":
        return lam * sq.sum()
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'sum'")
