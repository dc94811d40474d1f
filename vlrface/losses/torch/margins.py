"""Softmax heads for PyTorch: plain softmax, ArcFace, CosFace, SphereFace, AdaFace, Laplacian.

The same math, parameter names and centre layout ``(dim, n_classes)`` as the Keras heads
(``vlrface.losses.keras.arcface``, ``vlrface.losses.keras.margins``; see their docstrings for the
papers and variants), so weights copy across (``head.centres.data = torch.from_numpy(w)``).
``forward`` returns logits for ``margin_softmax_loss`` (softmax cross-entropy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlrface.losses.quality import check_statistic


class SoftmaxHead(nn.Module):
    """A plain softmax classifier (no margin; the labels are not used); ``bn_dropout``:
    BatchNorm + dropout 0.5 before the FC (SqueezeFacePoseNet §3's head)."""

    def __init__(self, dim: int, n_classes: int, bn_dropout: bool = False):
        super().__init__()
        pre = [nn.BatchNorm1d(dim), nn.Dropout(0.5)] if bn_dropout else []
        self.net = nn.Sequential(*pre, nn.Linear(dim, n_classes))

    def forward(self, embeddings, labels=None):
        return self.net(embeddings)


class _MarginHead(nn.Module):
    eps = 1e-7

    def __init__(self, dim: int, n_classes: int, scale: float, margin: float):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"{type(self).__name__} needs >= 2 classes, got {n_classes}")
        self.n_classes, self.scale, self.margin = int(n_classes), float(scale), float(margin)
        self.centres = nn.Parameter(torch.randn(dim, n_classes) * 0.01)

    def cosine(self, embeddings):
        e = F.normalize(embeddings.float(), dim=1)
        cos = e @ F.normalize(self.centres, dim=0)
        return cos.clamp(-1.0 + self.eps, 1.0 - self.eps)

    def onehot(self, labels):
        return F.one_hot(labels.long(), self.n_classes).float()


class ArcFaceHead(_MarginHead):
    """ArcFace (Deng et al. 2019), as ``vlrface.losses.keras.arcface.ArcFaceHead``:
    ``s cos(theta + m)`` with insightface's fallback ``cos(theta) - m sin(m)`` where
    ``theta + m`` would pass pi."""

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0, margin: float = 0.5):
        super().__init__(dim, n_classes, scale, margin)

    def forward(self, embeddings, labels):
        cos = self.cosine(embeddings)
        sin = torch.sqrt(1.0 - cos * cos)
        m = self.margin
        phi = cos * math.cos(m) - sin * math.sin(m)
        phi = torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        onehot = self.onehot(labels)
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)


class CosFaceHead(_MarginHead):
    """CosFace: target logit ``s (cos(theta_y) - m)``."""

    def __init__(self, dim: int, n_classes: int, scale: float = 64.0, margin: float = 0.35):
        super().__init__(dim, n_classes, scale, margin)

    def forward(self, embeddings, labels):
        return self.scale * (self.cosine(embeddings) - self.margin * self.onehot(labels))


class SphereFaceHead(_MarginHead):
    """SphereFace: target logit ``s psi(theta_y)``, ``psi = (-1)^k cos(m theta) - 2k``."""

    def __init__(self, dim: int, n_classes: int, scale: float = 30.0, margin: float = 4.0):
        if margin < 1:
            raise ValueError(f"SphereFace's multiplicative margin must be >= 1, got {margin}")
        super().__init__(dim, n_classes, scale, margin)

    def forward(self, embeddings, labels):
        cos = self.cosine(embeddings)
        m_theta = self.margin * torch.acos(cos)
        k = torch.floor(m_theta / math.pi).detach()
        psi = (1.0 - 2.0 * torch.remainder(k, 2.0)) * torch.cos(m_theta) - 2.0 * k
        onehot = self.onehot(labels)
        return self.scale * (onehot * psi + (1.0 - onehot) * cos)


class AdaFaceHead(_MarginHead):
    """AdaFace: norm-adaptive angular + additive margin; statistics update in ``train()`` mode."""

    eps = 1e-3

    def __init__(
        self,
        dim: int,
        n_classes: int,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
    ):
        super().__init__(dim, n_classes, scale, margin)
        self.h, self.t_alpha = float(h), float(t_alpha)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def forward(self, embeddings, labels):
        e = embeddings.float()
        norms = torch.linalg.vector_norm(e, dim=1).clamp(0.001, 100.0).detach()
        if self.training:
            with torch.no_grad():
                n = norms.numel()
                mean = norms.mean()
                std = torch.sqrt(((norms - mean) ** 2).sum() / max(n - 1, 1))
                a = self.t_alpha
                self.batch_mean.copy_(a * mean + (1.0 - a) * self.batch_mean)
                self.batch_std.copy_(a * std + (1.0 - a) * self.batch_std)
        z = (norms - self.batch_mean) / (self.batch_std + self.eps)
        z = (z * self.h).clamp(-1.0, 1.0)[:, None]
        onehot = self.onehot(labels)
        theta = torch.acos(self.cosine(e)) - onehot * self.margin * z
        theta = theta.clamp(self.eps, math.pi - self.eps)
        return self.scale * (torch.cos(theta) - onehot * (self.margin + self.margin * z))


class LaplacianMarginHead(_MarginHead):
    """ArcFace with per-image margin ``clip(quality_scale / q, min_margin, max_margin)``;
    ``forward(embeddings, labels, quality)``."""

    eps = 1e-5
    needs_quality = True

    def __init__(
        self,
        dim: int,
        n_classes: int,
        scale: float = 64.0,
        margin: float = 0.0,
        quality_scale: float = 1.0,
        min_margin: float = 0.0,
        max_margin: float = math.pi,
        statistic: str = "mean_abs",
    ):
        super().__init__(dim, n_classes, scale, margin)
        self.quality_scale = float(quality_scale)
        self.min_margin, self.max_margin = float(min_margin), float(max_margin)
        self.statistic = check_statistic(statistic)

    def margins(self, quality):
        q = torch.as_tensor(quality, dtype=torch.float32).detach().clamp_min(1e-6)
        return (self.quality_scale / q).clamp(self.min_margin, self.max_margin)

    def forward(self, embeddings, labels, quality):
        onehot = self.onehot(labels)
        theta = torch.acos(self.cosine(embeddings)) + onehot * self.margins(quality)[:, None]
        return self.scale * torch.cos(theta.clamp(self.eps, math.pi - self.eps))


def laplacian_quality(images, statistic: str = "mean_abs", pixel_scale: float = 128.0):
    """Per-image Laplacian quality of an NCHW batch (see ``keras_margins.laplacian_quality``)."""
    check_statistic(statistic)
    x = images.float() * pixel_scale
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")  # reflect-101, as cv2
    lap = p[:, :, :-2, 1:-1] + p[:, :, 2:, 1:-1] + p[:, :, 1:-1, :-2] + p[:, :, 1:-1, 2:] - 4.0 * x
    if statistic == "mean_abs":
        return lap.abs().mean(dim=(1, 2, 3))
    return lap.var(dim=(1, 2, 3), unbiased=False)


def margin_softmax_loss(logits, labels):
    """Mean softmax cross-entropy of margin-head logits (as ``arcface_loss``)."""
    return F.cross_entropy(logits, labels.long())
